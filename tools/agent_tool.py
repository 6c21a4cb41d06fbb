"""The one way a job or service becomes a tool for other agents.

Every tool is a `StructuredTool` made by `agent_tool`: it is named after its function and
described to the model by `prompts/tools/<name>.md` (model-facing text is data, like every
prompt), a pydantic schema bounds each argument, paths are confined to the workspace by the
function (`tools/workspace.py` `confine`), user errors (bad input, a path outside the
workspace, a run that cannot start) come back to the model as one redacted line, and the
result is a dict whose paths are workspace-relative.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.tools import StructuredTool, ToolException
from pydantic import BaseModel, ConfigDict, ValidationError

from synthgraph.prompts import load_prompt
from synthgraph.tools.log import tool_error_text
from synthgraph.tools.workspace import confine, workspace_root


def agent_tool(
    func: Callable[..., dict[str, Any]],
    args_schema: type[BaseModel],
) -> StructuredTool:
    """`func` as a tool: a user error (any `ValueError`) is the model's to read, not a crash.

    The tool is named after `func`; its description is `prompts/tools/<name>.md`.
    Unknown arguments are refused: a misspelt or retired one would otherwise be dropped
    silently, and the tool would run with its default."""
    name = func.__name__
    description = load_prompt(f"tools/{name}.md").strip()
    strict = type(
        args_schema.__name__,
        (args_schema,),
        {"model_config": ConfigDict(extra="forbid"), "__doc__": args_schema.__doc__},
    )

    @functools.wraps(func)
    def guarded(**arguments: Any) -> dict[str, Any]:
        try:
            return func(**arguments)
        except ToolException:
            raise
        except ValueError as error:  # InputError, WorkspaceError, RunError, ...
            raise ToolException(str(error)) from error

    return StructuredTool.from_function(
        func=guarded,
        name=name,
        description=description,
        args_schema=strict,
        handle_tool_error=tool_error_text,
        handle_validation_error=explain_arguments,
    )


def explain_arguments(error: ValidationError) -> str:
    """Invalid arguments as the model should read them: which argument, and what is wrong."""
    return "invalid arguments: " + "; ".join(
        f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:5]
    )


def counts(summary: object, *names: str) -> dict[str, Any]:
    """The named fields of a job's summary, for a tool's answer."""
    return {name: getattr(summary, name) for name in names}


def workspace_relative(path: str | Path) -> str:
    """A path the tool returns, relative to the workspace (and confined to it)."""
    return str(confine(path).relative_to(workspace_root()))
