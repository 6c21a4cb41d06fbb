"""Personas graph: Text-to-Persona, then rounds of Persona-to-Persona, then dedup.

PersonaHub (arXiv 2406.20094) in one state machine:

    START ─Send per text─▶ text_to_persona ─▶ plan_round ─Send per (persona, relation)─▶ persona_to_persona
                                                  ▲                                              │
                                                  └──────────────────────────────────────────────┘
                                              plan_round ─(rounds done)─▶ dedup ─▶ END

Every persona record carries `id` (content-derived), `persona`, `role`,
`domain`, `source_id` (the text or the parent persona), `input_id` (the text
at the root of its tree), `relation` (None for text-derived), `round` and,
after the dedup node, `dedup` (stage, kept, nearest_id, score).
A reply that never validates becomes an entry in `rejects`, not a failed run.
A generated persona that the namespace's dedup memory already holds (kept by an
earlier run) is not expanded again: its relations were expanded when it was
kept, so a rerun on the same texts adds nothing even when the model words the
same personas slightly differently.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NotRequired

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from langgraph.utils.runnable import RunnableCallable
from typing_extensions import TypedDict

from synthgraph.agents.llm import ainvoke_structured, invoke_structured
from synthgraph.agents.personas import (
    PERSPECTIVES,
    RECORD_ERRORS,
    PersonaDraft,
    call_seed,
    related_persona_messages,
    text_to_persona_messages,
)
from synthgraph.agents.resilience import Rejection, rejection
from synthgraph.graphs.context import RunContext
from synthgraph.tools.dedup import DedupResult, DedupService, Method, ProgressCallback
from synthgraph.tools.io import content_id
from synthgraph.tools.log import get_logger

log = get_logger(__name__)

DEFAULT_RELATIONS = ("colleague", "student", "customer")
DedupMethod = Literal["both", "minhash", "embedding", "none"]


# --- state ----------------------------------------------------------------------
class InputText(TypedDict):
    id: str
    text: str


class PersonasInput(TypedDict):
    texts: list[InputText]
    seed_personas: NotRequired[list[dict[str, Any]]]
    """Persona records to expand (e.g. from an earlier run); they are not output again."""


class PersonasOutput(TypedDict):
    personas: list[dict[str, Any]]
    dropped: list[dict[str, Any]]
    rejects: list[Rejection]


class PersonasState(PersonasInput, total=False):
    generated: Annotated[list[dict[str, Any]], operator.add]
    rejects: Annotated[list[Rejection], operator.add]
    frontier: list[dict[str, Any]]
    seen: int
    round: int
    personas: list[dict[str, Any]]
    dropped: list[dict[str, Any]]


class TextTask(TypedDict):
    text: InputText
    perspective: str


class ExpandTask(TypedDict):
    parent: dict[str, Any]
    relation: str


@dataclass
class PersonasContext(RunContext):
    """Per-run knobs of the personas graph (Studio shows them as a form)."""

    temperature: float | None = 0.0
    """Greedy by default: the same text gives the same persona, so a rerun is recognised as
    duplicates of the persistent store. Raise it for more varied (and less repeatable) personas."""
    personas_per_text: int = 1
    """Personas inferred per text, one per perspective: read, write, like, dislike (1-4)."""
    relations: list[str] = field(default_factory=lambda: list(DEFAULT_RELATIONS))
    """Interpersonal relations to expand each persona along."""
    expand_rounds: int = 1
    """Persona-to-Persona rounds (0: text-derived personas only; the paper goes up to 6)."""
    expand_limit: int | None = None
    """At most this many personas expanded per round (None: all of them)."""
    max_text_chars: int = 1200
    """Longer texts are clipped before prompting (small models, short contexts)."""
    dedup: DedupMethod = "both"
    """Dedup method at the end: MinHash, then embeddings (`both`), one of them, or `none`
    (the job dedups the whole corpus in a stage of its own instead)."""
    namespace: str = "personas"
    """Dedup memory: personas are compared with everything kept before in this namespace."""
    threshold: float = 0.9
    """Dedup threshold: Jaccard for MinHash, cosine for embeddings."""
    seed: int | None = 0
    """Base sampling seed mixed with each input's id, so reruns sample the same; None: unseeded."""

    def call_kwargs(self, *parts: str) -> dict[str, Any]:
        """Model overrides for one call: temperature, max tokens and a content-derived seed."""
        kwargs: dict[str, Any] = dict(self.model_kwargs())
        if self.seed is not None:
            kwargs["seed"] = call_seed(str(self.seed), *parts)
        return kwargs


def persona_record(
    draft: PersonaDraft,
    *,
    source_id: str,
    input_id: str,
    round: int,
    relation: str | None = None,
    perspective: str | None = None,
) -> dict[str, Any]:
    persona = " ".join(draft.persona.split())
    return {
        "id": content_id(persona, source_id, relation or perspective or ""),
        "persona": persona,
        "role": draft.role.strip(),
        "domain": draft.domain.strip(),
        "source_id": source_id,
        "input_id": input_id,
        "relation": relation,
        "perspective": perspective,
        "round": round,
    }


def dedup_personas(
    records: list[dict[str, Any]],
    namespace: str,
    threshold: float,
    method: Method = "both",
    progress: ProgressCallback | None = None,
    owner: str | None = None,
) -> DedupResult:
    """Dedup of persona records against the namespace's persistent memory."""
    service = DedupService(
        namespace=namespace, threshold=threshold, method=method, progress=progress, owner=owner
    )
    return service.dedup(records, field="persona")


def not_yet_known(
    personas: list[dict[str, Any]], namespace: str, threshold: float
) -> list[dict[str, Any]]:
    """The personas that the dedup memory does not hold yet (the memory is only read).

    The service also compares the batch with itself; a persona whose nearest match
    is a sibling in this batch is still new here (the final dedup judges siblings).
    """
    if not personas:
        return personas
    result = DedupService(namespace=namespace, threshold=threshold).dedup(
        personas, field="persona", remember=False
    )
    batch = {persona["id"] for persona in personas}
    # Ids are content-derived: a persona matched to its own id is the stored one.
    known = {
        r["id"]
        for r in result.dropped
        if r["dedup"]["nearest_id"] == r["id"] or r["dedup"]["nearest_id"] not in batch
    }
    if known:
        log.info("personas.known_not_expanded", count=len(known))
    return [persona for persona in personas if persona["id"] not in known]


def _context(runtime: Runtime[PersonasContext]) -> PersonasContext:
    return runtime.context or PersonasContext()


# --- nodes ----------------------------------------------------------------------
# The LLM nodes come in two flavours that share all but the call: LangGraph runs the sync one
# on `invoke` (the thread executor) and the async one on `ainvoke` (the async executor,
# Studio), so neither path parks a thread per request.
def _text_request(task: TextTask, runtime: Runtime[PersonasContext]) -> dict[str, Any]:
    context = _context(runtime)
    text, perspective = task["text"], task["perspective"]
    return {
        "messages": text_to_persona_messages(text["text"], perspective, context.max_text_chars),
        "record_id": text["id"],
        **context.call_kwargs("text", text["id"], perspective),
    }


def _from_text(task: TextTask, draft: PersonaDraft | Exception) -> dict[str, Any]:
    text, perspective = task["text"], task["perspective"]
    if isinstance(draft, Exception):
        return {"rejects": [rejection(f"{text['id']}:{perspective}", "text_to_persona", draft)]}
    record = persona_record(
        draft, source_id=text["id"], input_id=text["id"], round=0, perspective=perspective
    )
    return {"generated": [record]}


def text_to_persona(task: TextTask, runtime: Runtime[PersonasContext]) -> dict[str, Any]:
    return _from_text(
        task, _drafted(lambda: invoke_structured(PersonaDraft, **_text_request(task, runtime)))
    )


async def atext_to_persona(task: TextTask, runtime: Runtime[PersonasContext]) -> dict[str, Any]:
    return _from_text(
        task, await _adrafted(ainvoke_structured(PersonaDraft, **_text_request(task, runtime)))
    )


def plan_round(state: PersonasState, runtime: Runtime[PersonasContext]) -> dict[str, Any]:
    """Fan-in after each round: the new personas made in it become the next frontier."""
    context = _context(runtime)
    generated = state.get("generated", [])
    finished = state.get("round", -1) + 1  # 0 after Text-to-Persona, r after expansion round r
    newest = generated[state.get("seen", 0) :]
    if finished < context.expand_rounds and context.relations:
        newest = not_yet_known(newest, context.namespace, context.threshold)
    frontier = [*state.get("seed_personas", []), *newest] if finished == 0 else newest
    return {"frontier": frontier, "seen": len(generated), "round": finished}


async def aplan_round(state: PersonasState, runtime: Runtime[PersonasContext]) -> dict[str, Any]:
    """`plan_round` on the loop when it only slices the state (no expansion left): a thread
    hop per text would cost more than the work."""
    if state.get("round", -1) + 1 < _context(runtime).expand_rounds:
        return await asyncio.to_thread(plan_round, state, runtime)  # reads the dedup store
    return plan_round(state, runtime)


def _expand_request(task: ExpandTask, runtime: Runtime[PersonasContext]) -> dict[str, Any]:
    context = _context(runtime)
    parent, relation = task["parent"], task["relation"]
    return {
        "messages": related_persona_messages(parent["persona"], relation),
        "record_id": parent["id"],
        **context.call_kwargs("expand", parent["id"], relation),
    }


def _from_parent(task: ExpandTask, draft: PersonaDraft | Exception) -> dict[str, Any]:
    parent, relation = task["parent"], task["relation"]
    if isinstance(draft, Exception):
        return {"rejects": [rejection(f"{parent['id']}:{relation}", "persona_to_persona", draft)]}
    record = persona_record(
        draft,
        source_id=parent["id"],
        input_id=parent.get("input_id", parent["id"]),
        relation=relation,
        round=parent.get("round", 0) + 1,
    )
    return {"generated": [record]}


def persona_to_persona(task: ExpandTask, runtime: Runtime[PersonasContext]) -> dict[str, Any]:
    return _from_parent(
        task, _drafted(lambda: invoke_structured(PersonaDraft, **_expand_request(task, runtime)))
    )


async def apersona_to_persona(
    task: ExpandTask, runtime: Runtime[PersonasContext]
) -> dict[str, Any]:
    return _from_parent(
        task, await _adrafted(ainvoke_structured(PersonaDraft, **_expand_request(task, runtime)))
    )


def _drafted(call: Callable[[], PersonaDraft]) -> PersonaDraft | Exception:
    """The draft, or the record's own failure (a reject, not a failed run)."""
    try:
        return call()
    except RECORD_ERRORS as error:
        return error


async def _adrafted(call: Awaitable[PersonaDraft]) -> PersonaDraft | Exception:
    try:
        return await call
    except RECORD_ERRORS as error:
        return error


def dedup(state: PersonasState, runtime: Runtime[PersonasContext]) -> dict[str, Any]:
    context = _context(runtime)
    generated = state.get("generated", [])
    if context.dedup == "none" or not generated:
        return {"personas": generated, "dropped": []}
    result = dedup_personas(generated, context.namespace, context.threshold, context.dedup)
    return {"personas": result.kept, "dropped": result.dropped}


# --- edges ----------------------------------------------------------------------
def fan_out_texts(state: PersonasState, runtime: Runtime[PersonasContext]) -> list[Send] | str:
    texts = state.get("texts", [])
    if not texts:
        return "plan_round"
    perspectives = PERSPECTIVES[: max(1, _context(runtime).personas_per_text)]
    return [
        Send("text_to_persona", {"text": text, "perspective": perspective})
        for text in texts
        for perspective in perspectives
    ]


def fan_out_relations(state: PersonasState, runtime: Runtime[PersonasContext]) -> list[Send] | str:
    context = _context(runtime)
    frontier = state.get("frontier", [])
    if state.get("round", 0) >= context.expand_rounds or not frontier or not context.relations:
        return "dedup"
    if context.expand_limit is not None:
        frontier = frontier[: context.expand_limit]
    return [
        Send("persona_to_persona", {"parent": parent, "relation": relation})
        for parent in frontier
        for relation in context.relations
    ]


builder = StateGraph(
    PersonasState, PersonasContext, input_schema=PersonasInput, output_schema=PersonasOutput
)


def _both(func: Callable[..., Any], afunc: Callable[..., Awaitable[Any]]) -> RunnableCallable:
    """A node with a sync and an async body (LangGraph picks by `invoke` or `ainvoke`)."""
    return RunnableCallable(func, afunc, name=func.__name__, trace=False)


builder.add_node("text_to_persona", _both(text_to_persona, atext_to_persona), input_schema=TextTask)
builder.add_node("plan_round", _both(plan_round, aplan_round))
builder.add_node(
    "persona_to_persona",
    _both(persona_to_persona, apersona_to_persona),
    input_schema=ExpandTask,
)
builder.add_node(dedup)  # Chroma and embeddings: sync, in LangGraph's thread pool
builder.add_conditional_edges(START, fan_out_texts, ["text_to_persona", "plan_round"])
builder.add_edge("text_to_persona", "plan_round")
builder.add_conditional_edges("plan_round", fan_out_relations, ["persona_to_persona", "dedup"])
builder.add_edge("persona_to_persona", "plan_round")
builder.add_edge("dedup", END)

graph = builder.compile(name="personas")
