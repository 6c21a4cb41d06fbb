"""`make demo`: texts → personas → one expansion round → dedup → math problems.

Runs on the embedded local model (or any endpoint in SYNTHGRAPH_BASE_URL) and
stays small so it finishes in minutes on two CPU cores: twelve short texts,
one Persona-to-Persona round for a few personas, three math problems.
Outputs land in `<data_dir>/demo/<run id>/`; the demo's dedup memory is its
own namespace, reset at the start so every demo run tells the same story.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from synthgraph.agents.personas import bundled_few_shot
from synthgraph.graphs.cli_support import console, progress, stdout, table
from synthgraph.graphs.personas.graph import PersonasContext, graph
from synthgraph.graphs.personas.job import personas_job
from synthgraph.graphs.synthesis.graph import SynthesisContext
from synthgraph.graphs.synthesis.job import synthesis_job
from synthgraph.tools.dedup import DedupService
from synthgraph.tools.io import read_jsonl, write_records
from synthgraph.tools.log import configure_logging
from synthgraph.tools.runs import new_run_id
from synthgraph.tools.settings import get_settings

TEXTS = Path(__file__).resolve().parent / "texts"
NAMESPACE = "demo"
RELATIONS = ["colleague", "student"]
EXPANDED_PERSONAS = 2  # personas expanded along each relation
MATH_PERSONAS = 3
MAX_TOKENS = 160  # a persona or a problem fits; keeps the small model quick


def dropped_by_stage(records: list[dict[str, Any]]) -> dict[str, int]:
    counts = {"minhash": 0, "embedding": 0}
    for record in records:
        counts[record["dedup"]["stage"]] = counts.get(record["dedup"]["stage"], 0) + 1
    return counts


def expand(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """One Persona-to-Persona round through the graph, with a progress bar per finished Send."""
    context = PersonasContext(relations=RELATIONS, namespace=NAMESPACE, max_tokens=MAX_TOKENS)
    result: dict[str, Any] = {"personas": [], "dropped": [], "rejects": []}
    with progress() as bar:
        task = bar.add_task("persona → persona", total=len(seeds) * len(RELATIONS))
        for update in graph.stream(
            {"texts": [], "seed_personas": seeds}, context=context, stream_mode="updates"
        ):
            for node, values in update.items():
                if node == "persona_to_persona":
                    bar.advance(task)
                    result["rejects"] += (values or {}).get("rejects", [])
                elif node == "dedup":
                    result.update({k: v for k, v in values.items() if k != "rejects"})
    return result


def main() -> None:
    configure_logging(level="WARNING")
    out = get_settings().data_dir / "demo" / new_run_id()
    console.print(f"[bold]synthgraph demo[/] → {out}")
    DedupService(namespace=NAMESPACE).reset()
    rows: list[list[Any]] = []
    started = time.monotonic()

    # 1. Text-to-Persona over the example texts, then dedup (the `synthgraph personas` job).
    clock = time.monotonic()
    context = PersonasContext(expand_rounds=0, namespace=NAMESPACE, max_tokens=MAX_TOKENS)
    texts = personas_job(TEXTS, out / "personas", context=context)
    stages = {row[0]: row for row in texts.stages}
    rows.append(
        ["text→persona", texts.texts, texts.generated, texts.kept,
         stages.get("minhash", [0, 0, 0, 0])[3], stages.get("embedding", [0, 0, 0, 0])[3],
         texts.rejects, f"{time.monotonic() - clock:.0f} s"]
    )  # fmt: skip
    kept = list(read_jsonl(out / "personas" / "personas.jsonl"))

    # 2. One Persona-to-Persona round for a few personas, deduped against everything kept so far.
    clock = time.monotonic()
    seeds = kept[:EXPANDED_PERSONAS]
    expanded = expand(seeds)
    write_records(expanded["personas"], out / "expanded.jsonl")
    write_records(expanded["dropped"], out / "expanded_dropped.jsonl")
    dropped = dropped_by_stage(expanded["dropped"])
    rows.append(
        ["persona→persona", len(seeds) * len(RELATIONS),
         len(expanded["personas"]) + len(expanded["dropped"]), len(expanded["personas"]),
         dropped["minhash"], dropped["embedding"], len(expanded["rejects"]), f"{time.monotonic() - clock:.0f} s"]
    )  # fmt: skip

    # 3. Math problems for a few personas, few-shot (the `synthgraph synthesize` job).
    clock = time.monotonic()
    chosen = (expanded["personas"] + kept)[:MATH_PERSONAS]
    write_records(chosen, out / "math_personas.jsonl")
    math_context = SynthesisContext(
        task="math", max_tokens=2 * MAX_TOKENS, few_shot_file=str(bundled_few_shot("math"))
    )
    math = synthesis_job(out / "math_personas.jsonl", out / "math", context=math_context)
    rows.append(
        ["persona→math", math.personas, math.items, math.items, "-", "-", math.rejects,
         f"{time.monotonic() - clock:.0f} s"]
    )  # fmt: skip

    # What came out, and the closing summary.
    for persona in kept[:3] + expanded["personas"][:3]:
        how = (
            f"{persona['relation']} of {persona['source_id']}"
            if persona["relation"]
            else persona.get("source", "")
        )
        stdout.print(f"[bold]{persona['id']}[/] ({how}): {persona['persona']}")
    for item in read_jsonl(out / "math" / "items.jsonl"):
        stdout.print(
            f"\n[bold]math for {item['persona_id']}[/]: {item['item']['problem']}\n  → {item['item']['answer']}"
        )
    columns = ["stage", "in", "made", "kept", "dup: minhash", "dup: embed", "rejects", "time"]
    stdout.print(table("demo summary", columns, rows))
    stdout.print(f"total {time.monotonic() - started:.0f} s; outputs in {out}")


if __name__ == "__main__":
    main()
