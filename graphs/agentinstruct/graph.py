"""AgentInstruct: seeds become instruction data through three agentic flows.

One graph, three subgraphs (Orca AgentInstruct, arXiv 2407.03502):

    START ─▶ prepare ─Send per (seed, skill)─▶ content_transformation ─▶ plan_instructions
             plan_instructions ─Send per transformed text─▶ instruction_generation ─▶ plan_refinement
             plan_refinement ─Send per judged pair─▶ refinement ─▶ deduplicate ─▶ END
             (a step with nothing to fan out goes straight to deduplicate)

    content_transformation:  START ─▶ route ─Send per transformation─▶ transform ─▶ END
    instruction_generation:  START ─▶ sample_types ─▶ create_pairs ─▶ judge_pairs ─▶ END
    refinement:              START ─▶ start ─▶ suggest ─▶ edit ─▶ judge_edit ─▶ converse
                                        ▲                             │
                                        └──(accepted, rounds left)────┘
                             converse ─▶ contrast ─▶ finish ─▶ END

1. content_transformation: a router picks transformations of the skill for a
   seed (all, a random k, or the model's choice) and each transformation agent
   rewrites the seed into a text suited to the skill;
2. instruction_generation: per transformed text, instruction types are sampled
   from the skill's taxonomy, the generator writes each task and its answer,
   the skill's validator (if any) checks the pair's form, and the judge checks
   the answer against the text (rejected pairs go to `rejects` with the reason);
3. refinement: a suggester-editor pair makes each task harder for up to N
   rounds; the loop stops early when the judge rejects an edit, and every
   round's version stays in the record. Then, with `turns` > 1, a follow-up
   agent asks and the answerer replies (a conversation); with `preferences`,
   the final task is answered without its text and judged (a rival answer
   for a preference pair).

Last, near-duplicate instructions are removed by the dedup service. Skills are
data (`prompts/skills/<skill>/`), so adding one needs no change here.
"""

from __future__ import annotations

import operator
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from typing_extensions import TypedDict

from synthgraph.agents.agentinstruct import (
    Skill,
    answer_in_conversation,
    answer_instruction,
    answer_without_text,
    ask_follow_up,
    chat_messages,
    check_pair,
    choose_transformations,
    create_instruction,
    edit_instruction,
    judge_answer,
    list_skills,
    load_skill,
    sample_instruction_types,
    sample_transformations,
    suggest_refinements,
    transform_seed,
)
from synthgraph.agents.resilience import Rejection, rejection
from synthgraph.graphs.context import RunContext
from synthgraph.tools.dedup import DedupService
from synthgraph.tools.instruction_checks import CheckFailed
from synthgraph.tools.io import content_id
from synthgraph.tools.text import excerpt


# --- state --------------------------------------------------------------------------
class Seed(TypedDict):
    id: str
    text: str
    source: NotRequired[str]


class Transformed(TypedDict):
    """A seed rewritten by one transformation agent of one skill."""

    seed_id: str
    seed_source: str
    skill: str
    transformation: str
    text: str


class Candidate(TypedDict):
    """An (instruction, answer) pair on a transformed text, with the judge's verdict."""

    id: str
    source: Transformed
    instruction_type: str
    instruction: str
    answer: str
    judge: dict[str, Any]


class AgentInstructInput(TypedDict):
    seeds: list[Seed]
    skills: NotRequired[list[str]]
    """Skill names; missing or empty: every shipped skill."""


class AgentInstructOutput(TypedDict):
    instructions: list[dict[str, Any]]
    rejects: Annotated[list[Rejection], operator.add]


class AgentInstructState(AgentInstructInput, AgentInstructOutput, total=False):
    jobs: list[TransformationInput]
    generation_jobs: list[GenerationInput]
    transformed: Annotated[list[Transformed], operator.add]
    candidates: Annotated[list[Candidate], operator.add]
    refined: Annotated[list[dict[str, Any]], operator.add]


class TransformationInput(TypedDict):
    seed: Seed
    skill: str


class TransformationOutput(TypedDict):
    transformed: Annotated[list[Transformed], operator.add]
    rejects: Annotated[list[Rejection], operator.add]


class TransformationState(TransformationInput, TransformationOutput, total=False):
    chosen: list[str]


class TransformTask(TransformationInput):
    transformation: str


class GenerationInput(TypedDict):
    source: Transformed
    count: int


class GenerationOutput(TypedDict):
    candidates: Annotated[list[Candidate], operator.add]
    rejects: Annotated[list[Rejection], operator.add]


class GenerationState(GenerationInput, GenerationOutput, total=False):
    types: list[str]
    pairs: list[Candidate]


class RefinementInput(TypedDict):
    candidate: Candidate


class RefinementOutput(TypedDict):
    refined: Annotated[list[dict[str, Any]], operator.add]


class RefinementState(RefinementInput, RefinementOutput, total=False):
    versions: list[dict[str, Any]]
    suggestions: str
    draft: dict[str, Any]
    stopped: bool
    max_rounds: int
    exchanges: list[tuple[str, str]]
    rival: dict[str, Any]


# --- context ----------------------------------------------------------------------
@dataclass
class AgentInstructContext(RunContext):
    """Per-run knobs of the AgentInstruct graph."""

    routing: Literal["all", "sample", "llm"] = "sample"
    """How transformations are picked per seed: all of the skill's, a random k, or the model's choice of k."""
    transformations_per_seed: int = 1
    """k for routing 'sample' and 'llm'."""
    instructions_per_seed: int = 1
    """Instructions created per seed and skill (spread over its transformed texts)."""
    refine_rounds: int = 1
    """Suggester-editor rounds per instruction (0: no refinement)."""
    min_score: int = 3
    """Lowest judge score (1-5) an answer needs to be kept."""
    max_seed_chars: int = 1500
    """Seeds are cut to this many characters (at a paragraph or line break) before transformation."""
    seed: int = 0
    """Random seed of the choices (transformations, instruction types): same seed, same choices."""
    dedup: Literal["both", "minhash", "embedding", "none"] = "both"
    """Near-duplicate removal: MinHash then embeddings, one of them, or none."""
    threshold: float = 0.9
    """Similarity at which an instruction counts as a near duplicate of a kept one."""
    namespace: str | None = None
    """Dedup memory shared across invocations (a job uses one per run); unset: this invocation only."""
    owner: str | None = None
    """Who stores kept instructions (a job: its run id); see `DedupService`'s `owner`."""
    turns: int = 1
    """User turns per conversation: past the first, a follow-up agent asks and the answerer replies."""
    preferences: bool = False
    """Also answer each final task without its text and judge that rival: a preference pair."""


# --- helpers -------------------------------------------------------------------------
def _context(runtime: Runtime[AgentInstructContext]) -> AgentInstructContext:
    return runtime.context or AgentInstructContext()


def _rng(*parts: object) -> random.Random:
    """A random source fixed by its parts, so resumed and repeated runs choose alike."""
    return random.Random("/".join(map(str, parts)))


def _accepted(verdict: dict[str, Any], context: AgentInstructContext) -> bool:
    return bool(verdict["correct"]) and int(verdict["score"]) >= context.min_score


def _judge(
    skill: Skill,
    text: str,
    pair: Mapping[str, Any],
    record_id: str,
    context: AgentInstructContext,
) -> dict[str, Any]:
    """The judge's verdict on the pair's instruction and answer, against `text`."""
    verdict = judge_answer(
        skill,
        text,
        pair["instruction"],
        pair["answer"],
        record_id=record_id,
        **context.model_kwargs(),
    )
    return verdict.model_dump()


# --- 1. content transformation flow ------------------------------------------------
def route(state: TransformationState, runtime: Runtime[AgentInstructContext]) -> dict[str, Any]:
    """The router: which of the skill's transformations to apply to this seed."""
    context = _context(runtime)
    skill = load_skill(state["skill"])
    seed = state["seed"]
    k = max(1, context.transformations_per_seed)
    if context.routing == "all":
        return {"chosen": list(skill.transformations)}
    if context.routing == "sample":
        return {
            "chosen": sample_transformations(skill, k, _rng(seed["id"], skill.name, context.seed))
        }
    record_id = f"{seed['id']}/{skill.name}"
    try:
        chosen = choose_transformations(
            skill, seed["text"], k, record_id=record_id, **context.model_kwargs()
        )
    except Exception as error:  # the seed's other skills go on
        return {"chosen": [], "rejects": [rejection(record_id, "route", error)]}
    return {"chosen": chosen}


def fan_out_transforms(state: TransformationState) -> list[Send]:
    return [
        Send("transform", {"seed": state["seed"], "skill": state["skill"], "transformation": name})
        for name in state.get("chosen", [])
    ]


def transform(task: TransformTask, runtime: Runtime[AgentInstructContext]) -> TransformationOutput:
    """One content-transformation agent on one seed."""
    context = _context(runtime)
    seed, skill = task["seed"], load_skill(task["skill"])
    record_id = f"{seed['id']}/{skill.name}/{task['transformation']}"
    try:
        text = transform_seed(
            skill,
            task["transformation"],
            seed["text"],
            record_id=record_id,
            **context.model_kwargs(),
        )
    except Exception as error:
        return {"transformed": [], "rejects": [rejection(record_id, "transform", error)]}
    item: Transformed = {
        "seed_id": seed["id"],
        "seed_source": seed.get("source", seed["id"]),
        "skill": skill.name,
        "transformation": task["transformation"],
        "text": text,
    }
    return {"transformed": [item], "rejects": []}


transformation_builder = StateGraph(
    TransformationState,
    AgentInstructContext,
    input_schema=TransformationInput,
    output_schema=TransformationOutput,
)
transformation_builder.add_node(route)
transformation_builder.add_node(transform, input_schema=TransformTask)
transformation_builder.add_edge(START, "route")
transformation_builder.add_conditional_edges("route", fan_out_transforms, ["transform"])
transformation_builder.add_edge("transform", END)
content_transformation = transformation_builder.compile(name="content_transformation")


# --- 2. seed instruction generation flow ------------------------------------------
def sample_types(state: GenerationState, runtime: Runtime[AgentInstructContext]) -> dict[str, Any]:
    """Instruction types for this text, drawn from the skill's taxonomy."""
    context = _context(runtime)
    source = state["source"]
    skill = load_skill(source["skill"])
    rng = _rng(source["seed_id"], skill.name, source["transformation"], context.seed)
    return {"types": sample_instruction_types(skill, state["count"], rng)}


def create_pairs(state: GenerationState, runtime: Runtime[AgentInstructContext]) -> dict[str, Any]:
    """The generator writes one task per sampled type, then answers it from the text."""
    context = _context(runtime)
    source = state["source"]
    skill = load_skill(source["skill"])
    pairs: list[Candidate] = []
    rejects: list[Rejection] = []
    for index, instruction_type in enumerate(state["types"]):
        record_id = content_id(
            source["seed_id"], skill.name, source["transformation"], instruction_type, str(index)
        )
        try:
            instruction = create_instruction(
                skill,
                source["text"],
                instruction_type,
                record_id=record_id,
                **context.model_kwargs(),
            )
            answer = answer_instruction(
                skill, source["text"], instruction, record_id=record_id, **context.model_kwargs()
            )
        except Exception as error:
            rejects.append(rejection(record_id, "create", error))
            continue
        try:  # a pair of the wrong form for its skill never reaches the judge
            check_pair(skill, source["text"], instruction, answer)
        except CheckFailed as error:
            raw = f"{instruction}\n---\n{answer}"
            rejects.append(rejection(record_id, "validate", error, raw=raw))
            continue
        pairs.append(
            {
                "id": record_id,
                "source": source,
                "instruction_type": instruction_type,
                "instruction": instruction,
                "answer": answer,
                "judge": {},
            }
        )
    return {"pairs": pairs, "rejects": rejects}


def judge_pairs(state: GenerationState, runtime: Runtime[AgentInstructContext]) -> dict[str, Any]:
    """The judge checks each answer against the text; rejected pairs keep the judge's reasons."""
    context = _context(runtime)
    candidates: list[Candidate] = []
    rejects: list[Rejection] = []
    for pair in state.get("pairs", []):
        skill = load_skill(pair["source"]["skill"])
        try:
            verdict = _judge(skill, pair["source"]["text"], pair, pair["id"], context)
        except Exception as error:
            rejects.append(rejection(pair["id"], "judge", error))
            continue
        if _accepted(verdict, context):
            candidates.append({**pair, "judge": verdict})
        else:
            reason = f"judge rejected the answer (correct={verdict['correct']}, score={verdict['score']}): {verdict['reasons']}"
            rejects.append(
                rejection(
                    pair["id"], "judge", reason, raw=f"{pair['instruction']}\n---\n{pair['answer']}"
                )
            )
    return {"candidates": candidates, "rejects": rejects}


generation_builder = StateGraph(
    GenerationState,
    AgentInstructContext,
    input_schema=GenerationInput,
    output_schema=GenerationOutput,
)
generation_builder.add_sequence([sample_types, create_pairs, judge_pairs])
generation_builder.add_edge(START, "sample_types")
generation_builder.add_edge("judge_pairs", END)
instruction_generation = generation_builder.compile(name="instruction_generation")


# --- 3. refinement flow --------------------------------------------------------------
def start_refinement(
    state: RefinementState, runtime: Runtime[AgentInstructContext]
) -> dict[str, Any]:
    """Round 0 is the judged seed instruction."""
    candidate = state["candidate"]
    first = {
        "round": 0,
        "instruction": candidate["instruction"],
        "answer": candidate["answer"],
        "judge": candidate["judge"],
        "accepted": True,
    }
    return {"versions": [first], "stopped": False, "max_rounds": _context(runtime).refine_rounds}


def suggest(state: RefinementState, runtime: Runtime[AgentInstructContext]) -> dict[str, Any]:
    """The suggester: concrete ways to make the current task harder or more specific."""
    context = _context(runtime)
    candidate, current = state["candidate"], _current(state)
    skill = load_skill(candidate["source"]["skill"])
    try:
        suggestions = suggest_refinements(
            skill,
            candidate["source"]["text"],
            current["instruction"],
            current["answer"],
            record_id=candidate["id"],
            **context.model_kwargs(),
        )
    except Exception as error:
        return _failed_round(state, "suggest", error)
    return {"suggestions": suggestions}


def edit(state: RefinementState, runtime: Runtime[AgentInstructContext]) -> dict[str, Any]:
    """The editor rewrites the task per the suggestions; the generator answers the new task."""
    context = _context(runtime)
    candidate, current = state["candidate"], _current(state)
    skill = load_skill(candidate["source"]["skill"])
    text = candidate["source"]["text"]
    try:
        instruction = edit_instruction(
            skill,
            text,
            current["instruction"],
            state["suggestions"],
            record_id=candidate["id"],
            **context.model_kwargs(),
        )
        answer = answer_instruction(
            skill, text, instruction, record_id=candidate["id"], **context.model_kwargs()
        )
    except Exception as error:
        return _failed_round(state, "edit", error)
    try:
        check_pair(skill, text, instruction, answer)
    except CheckFailed as error:
        return _failed_round(state, "validate", error)
    return {"draft": {"instruction": instruction, "answer": answer}}


def judge_edit(state: RefinementState, runtime: Runtime[AgentInstructContext]) -> dict[str, Any]:
    """The judge checks the edited pair; a rejected edit ends the loop (the last good version stays)."""
    context = _context(runtime)
    candidate, draft = state["candidate"], state["draft"]
    skill = load_skill(candidate["source"]["skill"])
    version = {"round": len(state["versions"]), "suggestions": state["suggestions"], **draft}
    try:
        verdict = _judge(skill, candidate["source"]["text"], draft, candidate["id"], context)
    except Exception as error:
        return _failed_round(state, "judge", error)
    accepted = _accepted(verdict, context)
    return {
        "versions": [*state["versions"], {**version, "judge": verdict, "accepted": accepted}],
        "stopped": not accepted,
    }


def converse(state: RefinementState, runtime: Runtime[AgentInstructContext]) -> dict[str, Any]:
    """Past the first turn: the follow-up agent asks, the answerer replies, `turns - 1` times.
    A turn that fails ends the conversation there; the turns before it stay."""
    context = _context(runtime)
    candidate, final = state["candidate"], _current(state)
    skill = load_skill(candidate["source"]["skill"])
    text = candidate["source"]["text"]
    exchanges = [(final["instruction"], final["answer"])]
    for _ in range(context.turns - 1):
        try:
            question = ask_follow_up(
                skill, text, exchanges, record_id=candidate["id"], **context.model_kwargs()
            )
            answer = answer_in_conversation(
                skill,
                text,
                exchanges,
                question,
                record_id=candidate["id"],
                **context.model_kwargs(),
            )
        except Exception:  # the record keeps the turns it has; `turns` says how many
            break
        exchanges.append((question, answer))
    return {"exchanges": exchanges}


def contrast(state: RefinementState, runtime: Runtime[AgentInstructContext]) -> dict[str, Any]:
    """With `preferences`: the final task answered without its text, and judged (the rival)."""
    context = _context(runtime)
    if not context.preferences:
        return {}
    candidate, final = state["candidate"], _current(state)
    skill = load_skill(candidate["source"]["skill"])
    try:
        answer = answer_without_text(
            skill, final["instruction"], record_id=candidate["id"], **context.model_kwargs()
        )
        pair = {"instruction": final["instruction"], "answer": answer}
        verdict = _judge(skill, candidate["source"]["text"], pair, candidate["id"], context)
    except Exception:  # no rival: the record is still an SFT example, just not a pair
        return {}
    return {"rival": {"answer": answer, "judge": verdict}}


def finish(state: RefinementState) -> RefinementOutput:
    """The record: the last accepted version as chat messages, with provenance and every round."""
    candidate = state["candidate"]
    source = candidate["source"]
    versions = state["versions"]
    final = [v for v in versions if v["accepted"]][-1]
    skill = load_skill(source["skill"])
    messages = chat_messages(skill, source["text"], final["instruction"], final["answer"])
    for question, answer in state.get("exchanges", [])[1:]:
        messages += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    record = {
        "id": candidate["id"],
        "messages": messages,
        "turns": sum(m["role"] == "user" for m in messages),
        "skill": source["skill"],
        "transformation": source["transformation"],
        "instruction_type": candidate["instruction_type"],
        "refinement_rounds": final["round"],
        "seed_id": source["seed_id"],
        "seed_source": source["seed_source"],
        "seed_skill": f"{source['seed_id']}/{source['skill']}",
        "instruction": final["instruction"],
        "judge": {
            "score": final["judge"]["score"],
            "correct": final["judge"]["correct"],
            "reasons": final["judge"]["reasons"],
        },
        "transformed_text": source["text"],
        "versions": versions,
    }
    if "rival" in state:
        record["rival"] = state["rival"]
    return {"refined": [record]}


def _current(state: RefinementState) -> dict[str, Any]:
    return [v for v in state["versions"] if v["accepted"]][-1]


def _failed_round(state: RefinementState, stage: str, error: BaseException) -> dict[str, Any]:
    """A round that broke is kept as a rejected version; the record keeps its last good one."""
    failed = {
        "round": len(state["versions"]),
        "accepted": False,
        "error": f"{stage}: {type(error).__name__}: {error}",
    }
    return {"versions": [*state["versions"], failed], "stopped": True}


def refine_or_finish(state: RefinementState) -> str:
    """Another round while the judge accepts edits and rounds remain."""
    rounds_done = len(state["versions"]) - 1
    if state.get("stopped") or rounds_done >= state["max_rounds"]:
        return "converse"
    return "suggest"


def edit_or_finish(state: RefinementState) -> str:
    return "converse" if state.get("stopped") else "edit"


def judge_or_finish(state: RefinementState) -> str:
    return "converse" if state.get("stopped") else "judge_edit"


refinement_builder = StateGraph(
    RefinementState,
    AgentInstructContext,
    input_schema=RefinementInput,
    output_schema=RefinementOutput,
)
refinement_builder.add_node("start", start_refinement)
refinement_builder.add_node(suggest)
refinement_builder.add_node(edit)
refinement_builder.add_node(judge_edit)
refinement_builder.add_node(finish)
refinement_builder.add_edge(START, "start")
refinement_builder.add_conditional_edges("start", refine_or_finish, ["suggest", "converse"])
refinement_builder.add_conditional_edges("suggest", edit_or_finish, ["edit", "converse"])
refinement_builder.add_conditional_edges("edit", judge_or_finish, ["judge_edit", "converse"])
refinement_builder.add_conditional_edges("judge_edit", refine_or_finish, ["suggest", "converse"])
refinement_builder.add_sequence([converse, contrast])
refinement_builder.add_edge("contrast", "finish")
refinement_builder.add_edge("finish", END)
refinement = refinement_builder.compile(name="refinement")


# --- the agentinstruct graph -------------------------------------------------------
def prepare(state: AgentInstructState, runtime: Runtime[AgentInstructContext]) -> dict[str, Any]:
    """Check the skills, cut long seeds, and list one job per seed and skill."""
    context = _context(runtime)
    skills = state.get("skills") or list_skills()
    for name in skills:
        load_skill(name)  # an unknown or malformed skill is the caller's error: raise it
    jobs: list[TransformationInput] = []
    rejects: list[Rejection] = []
    for seed in state["seeds"]:
        text = seed.get("text")
        if not isinstance(text, str) or not text.strip():
            rejects.append(rejection(str(seed.get("id")), "seed", "the seed has no text"))
            continue
        seed_id = str(seed.get("id") or content_id(text.strip()))  # Studio users may leave ids out
        cut: Seed = {**seed, "id": seed_id, "text": excerpt(text.strip(), context.max_seed_chars)}
        jobs.extend({"seed": cut, "skill": name} for name in skills)
    return {"jobs": jobs, "rejects": rejects}


def fan_out_seeds(state: AgentInstructState) -> list[Send] | str:
    return [Send("content_transformation", job) for job in state["jobs"]] or "deduplicate"


def plan_instructions(
    state: AgentInstructState, runtime: Runtime[AgentInstructContext]
) -> dict[str, Any]:
    """Join the transformation branches; spread `instructions_per_seed` over each seed-skill's texts."""
    per_seed = _context(runtime).instructions_per_seed
    by_job: dict[tuple[str, str], list[Transformed]] = {}
    for item in state.get("transformed", []):
        by_job.setdefault((item["seed_id"], item["skill"]), []).append(item)
    generation_jobs: list[GenerationInput] = []
    for items in by_job.values():
        for position, item in enumerate(items):  # round robin
            count = per_seed // len(items) + (1 if position < per_seed % len(items) else 0)
            if count:
                generation_jobs.append({"source": item, "count": count})
    return {"generation_jobs": generation_jobs}


def fan_out_generation(state: AgentInstructState) -> list[Send] | str:
    return [
        Send("instruction_generation", job) for job in state["generation_jobs"]
    ] or "deduplicate"


def plan_refinement(state: AgentInstructState) -> dict[str, Any]:
    """Joins the generation branches."""
    return {}


def fan_out_refinement(state: AgentInstructState) -> list[Send] | str:
    return [
        Send("refinement", {"candidate": c}) for c in state.get("candidates", [])
    ] or "deduplicate"


def deduplicate(
    state: AgentInstructState, runtime: Runtime[AgentInstructContext]
) -> dict[str, Any]:
    """Drop instructions too similar to one already kept (in this call or this run)."""
    context = _context(runtime)
    records = state.get("refined", [])
    if context.dedup == "none" or not records:
        return {"instructions": records}
    namespace = context.namespace or f"agentinstruct-{uuid.uuid4().hex[:12]}"
    service = DedupService(
        namespace,
        threshold=context.threshold,
        method=context.dedup,
        owner=context.owner,
    )
    # Concurrent invocations may share one memory (a job runs several seeds at
    # once): the service locks it around each call.
    try:
        result = service.dedup(records, field="instruction")
    finally:
        if context.namespace is None:
            service.reset()  # a one-off memory: leave nothing behind
    duplicates = [
        rejection(
            r["id"],
            "dedup",
            f"near-duplicate of {r['dedup']['nearest_id']} ({r['dedup']['stage']} similarity {r['dedup']['score']})",
            raw=r["instruction"],
        )
        for r in result.dropped
    ]
    return {"instructions": result.kept, "rejects": duplicates}


builder = StateGraph(
    AgentInstructState,
    AgentInstructContext,
    input_schema=AgentInstructInput,
    output_schema=AgentInstructOutput,
)
# A subgraph's node is named here, not by the `compile(name=...)` far above.
builder.add_node(prepare)
builder.add_node("content_transformation", content_transformation)
builder.add_node(plan_instructions)
builder.add_node("instruction_generation", instruction_generation)
builder.add_node(plan_refinement)
builder.add_node("refinement", refinement)
builder.add_node(deduplicate)
builder.add_edge(START, "prepare")
builder.add_conditional_edges("prepare", fan_out_seeds, ["content_transformation", "deduplicate"])
builder.add_edge("content_transformation", "plan_instructions")
builder.add_conditional_edges(
    "plan_instructions", fan_out_generation, ["instruction_generation", "deduplicate"]
)
builder.add_edge("instruction_generation", "plan_refinement")
builder.add_conditional_edges("plan_refinement", fan_out_refinement, ["refinement", "deduplicate"])
builder.add_edge("refinement", "deduplicate")
builder.add_edge("deduplicate", END)

graph = builder.compile(name="agentinstruct")
