"""Per-run knobs carried in LangGraph's runtime context.

Studio renders a graph's `context_schema` as a form, so anything a user may
want to change for one run (not for the whole installation) lives here;
installation-wide settings stay in `synthgraph.tools.settings`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RunContext:
    """Knobs shared by every graph. Graph-specific contexts extend this."""

    temperature: float | None = None
    """Sampling temperature for this run; unset: SYNTHGRAPH_TEMPERATURE."""
    max_tokens: int | None = None
    """Completion length cap for this run; unset: SYNTHGRAPH_MAX_TOKENS."""

    def model_kwargs(self) -> dict[str, float | int]:
        """Overrides for `get_chat_model` / `invoke_*`, only those that are set."""
        overrides: dict[str, float | int] = {}
        if self.temperature is not None:
            overrides["temperature"] = self.temperature
        if self.max_tokens is not None:
            overrides["max_tokens"] = self.max_tokens
        return overrides
