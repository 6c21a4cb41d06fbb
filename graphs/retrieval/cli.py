"""`synthgraph retrieval generate|filter|train|eval`: unlabelled corpus → trained retriever.

Each command parses its options, calls its job (`graphs/retrieval/job.py`) and prints the summary.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from synthgraph.graphs import cli_support
from synthgraph.graphs.retrieval.graph import RetrievalContext
from synthgraph.graphs.retrieval.job import (
    PAIRS,
    ST_DATASET,
    TRIPLES,
    eval_job,
    filter_job,
    generate_job,
    train_job,
)
from synthgraph.tools.retrieval_data import STYLES

DEPRECATED_FLAGS: dict[str, str] = {}
retrieval_app = typer.Typer(
    help="Retrieval training data: generate queries, filter, train, evaluate.", no_args_is_help=True
)


@retrieval_app.command("generate")
@cli_support.with_run_options
def generate_command(
    ctx: typer.Context,
    corpus: Annotated[
        Path,
        typer.Argument(help="BEIR folder or corpus.jsonl, or a folder / JSONL / Parquet / CSV."),
    ],
    out: Annotated[Path | None, typer.Option(help="Run folder (default: data/runs/<id>).")] = None,
    style: Annotated[
        str, typer.Option(help="promptagator, vanilla, gbq or contrast (copying vs asking).")
    ] = "promptagator",
    examples: Annotated[
        Path | None, typer.Option(help="Example set (JSONL, or JSON with task + examples).")
    ] = None,
    per_doc: Annotated[
        int,
        typer.Option(
            "--per-doc", help="Queries per document, each with its own example order (temp > 0)."
        ),
    ] = 1,
    limit: Annotated[
        int | None, typer.Option(help="Use a seeded random sample of this many documents.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the document sample.")] = 13,
    max_tokens: Annotated[int, typer.Option(help="Completion cap per query.")] = 48,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.7,
    logprobs: Annotated[
        bool,
        typer.Option(help="Ask for token log-probs (needed by the logprob filter; slower)."),
    ] = True,
    max_minutes: Annotated[
        float | None, typer.Option(help="Stop after about this long (resume later).")
    ] = None,
    text_field: Annotated[
        str, typer.Option(help="Text field of JSONL/Parquet/CSV input.")
    ] = "text",
    id_field: Annotated[str, typer.Option(help="Id field of JSONL/Parquet/CSV input.")] = "_id",
    *,
    run_options: cli_support.RunOptions,
) -> None:
    """Write search queries for corpus documents (Promptagator / InPars prompts)."""
    if style not in STYLES:
        cli_support.fail(f"--style must be one of {', '.join(STYLES)}, not {style!r}")
    context = RetrievalContext(
        style=style,  # type: ignore[arg-type]
        examples_path=str(examples) if examples else None,
        samples=per_doc,
        max_tokens=max_tokens,
        temperature=temperature,
        logprobs=logprobs,
    )
    summary = generate_job(
        corpus, out, context=None if cli_support.resuming_as_started(ctx, run_options.resume) else context, limit=limit,
        seed=seed, resume=run_options.resume,
        retry_rejects=run_options.retry_rejects, dedupe_ids=run_options.dedupe_ids, max_minutes=max_minutes,
        budget=run_options.budget,
        text_field=text_field, id_field=id_field,
    )  # fmt: skip
    rows = [[k, v] for k, v in asdict(summary).items() if k != "seconds"]
    cli_support.stdout.print(cli_support.table("retrieval generate", ["", "value"], rows))
    cli_support.console.print(f"pairs: {summary.run_dir}/{PAIRS}")
    cli_support.report_run(summary.run_dir, run_options)


@retrieval_app.command("filter")
def filter_command(
    run_dir: Annotated[Path, typer.Argument(help="A `retrieval generate` run folder.")],
    filters: Annotated[
        str,
        typer.Option(help="Comma list of logprob, reranker, roundtrip, useful ('' for none)."),
    ] = "logprob,roundtrip",
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: RUN_DIR/filtered or /unfiltered).")
    ] = None,
    corpus: Annotated[
        Path | None, typer.Option(help="corpus.jsonl (default: the one the run generated from).")
    ] = None,
    keep: Annotated[
        float, typer.Option(help="Fraction kept by the logprob and reranker filters.")
    ] = 0.7,
    top_k: Annotated[int, typer.Option(help="Round-trip: the source must be in this top k.")] = 10,
    min_rank: Annotated[
        int, typer.Option(help="Useful: the source's best rank is at least this (not too easy).")
    ] = 2,
    max_rank: Annotated[
        int, typer.Option(help="Useful: ...and at most this (answerable): a looser round-trip.")
    ] = 100,
    rank_by: Annotated[
        str, typer.Option(help="Useful: retrievers that rank the source: bm25, dense or both.")
    ] = "bm25,dense",
    max_overlap: Annotated[
        str,
        typer.Option(
            help="Drop queries whose word overlap with their document is above this: a number, "
            "auto (the examples' 90th percentile) or none."
        ),
    ] = "none",
    negatives: Annotated[int, typer.Option(help="Hard negatives per query.")] = 3,
    negative_sources: Annotated[str, typer.Option(help="bm25, dense or both.")] = "bm25,dense",
    reranker: Annotated[
        Path | None, typer.Option(help="A trained cross-encoder folder for the reranker filter.")
    ] = None,
    retriever: Annotated[
        Path | None,
        typer.Option(help="Bi-encoder for round-trip and dense negatives (default: MiniLM)."),
    ] = None,
) -> None:
    """Filter generated pairs (InPars-v1/v2, Promptagator round-trip, usefulness) and mine hard negatives."""
    chosen = [f for f in filters.split(",") if f.strip()]
    overlap_cap: float | Literal["auto"] | None = None
    if max_overlap == "auto":
        overlap_cap = "auto"
    elif max_overlap != "none":
        try:
            overlap_cap = float(max_overlap)
        except ValueError:
            cli_support.fail(f"--max-overlap must be a number, auto or none, not {max_overlap!r}")
    summary = filter_job(
        run_dir, filters=chosen, out=out, corpus_path=corpus, keep=keep, top_k=top_k,
        useful_ranks=(min_rank, max_rank), useful_sources=tuple(s for s in rank_by.split(",") if s),
        max_overlap=overlap_cap, negatives=negatives,
        negative_sources=tuple(s for s in negative_sources.split(",") if s), reranker=reranker, retriever=retriever,
    )  # fmt: skip
    rows = [[f["name"], f["before"], f["kept"], f["removed"], f["note"]] for f in summary.filters]
    cli_support.stdout.print(
        cli_support.table("retrieval filter", ["filter", "before", "kept", "removed", "note"], rows)
    )

    def spread(stats: dict[str, float] | None) -> str:
        return (
            f"{stats['mean']:.2f} · {stats['q1']:.2f}–{stats['median']:.2f}–{stats['q3']:.2f}"
            if stats
            else ""
        )

    groups = [
        (f"{f['name']}: {group}", profile)
        for f in summary.filters
        for group, profile in f["overlap"].items()
    ] + list(summary.overlap.items())
    rows = [
        [group, profile["queries"], spread(profile.get("overlap")), spread(profile.get("words"))]
        for group, profile in groups
    ]
    cli_support.stdout.print(
        cli_support.table(
            "queries vs their documents (real: judged dev queries)",
            ["queries", "count", "word overlap (mean · q1–med–q3)", "words (mean · q1–med–q3)"],
            rows,
        )
    )
    cli_support.console.print(
        f"{summary.triples} triples: {summary.out_dir}/{TRIPLES} (sentence-transformers: {ST_DATASET})"
    )


@retrieval_app.command("train")
def train_command(
    folder: Annotated[
        Path, typer.Argument(help="Folder with train_triples.jsonl (or a run folder).")
    ],
    out: Annotated[Path, typer.Option(help="Model folder to write.")],
    epochs: Annotated[
        int, typer.Option(help="Most passes over the triples (early stopping may stop sooner).")
    ] = 4,
    holdout_share: Annotated[
        float,
        typer.Option(help="Share of source documents held out for early stopping (0: none)."),
    ] = 0.1,
    negative_sources: Annotated[
        str,
        typer.Option(
            help="Mine fresh, guarded hard negatives: bm25, dense or both ('' keeps the triples')."
        ),
    ] = "bm25,dense",
    batch_size: Annotated[int, typer.Option(help="Queries per step (in-batch negatives).")] = 32,
    cached_loss: Annotated[
        bool, typer.Option(help="Cached (GradCache) loss: large batches in small memory.")
    ] = False,
    negatives: Annotated[int, typer.Option(help="Hard negatives per query used in the loss.")] = 1,
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate.")] = 2e-5,
    corpus: Annotated[
        Path | None,
        typer.Option(help="corpus.jsonl to mine negatives from (default: the run's)."),
    ] = None,
    reranker: Annotated[
        Path | None,
        typer.Option(help="A trained cross-encoder that judges false negatives (default: MiniLM)."),
    ] = None,
    cross_encoder: Annotated[
        Path | None, typer.Option(help="Also train a MiniLM cross-encoder reranker here.")
    ] = None,
) -> None:
    """Fine-tune MiniLM (MultipleNegativesRankingLoss + hard negatives), optionally a reranker."""
    summary = train_job(
        folder, out, epochs=epochs, holdout_share=holdout_share,
        negative_sources=tuple(s.strip() for s in negative_sources.split(",") if s.strip()),
        batch_size=batch_size, cached_loss=cached_loss, negatives=negatives,
        learning_rate=learning_rate, corpus_path=corpus, reranker=reranker,
        cross_encoder=cross_encoder,
    )  # fmt: skip
    rows = [
        [
            r.model_dir,
            r.examples,
            r.steps,
            f"{r.best_epoch} of {r.epochs}",
            " → ".join(f"{x:.3f}" for x in r.heldout_mrr),
            f"{r.first_loss:.3f} → {r.last_loss:.3f}",
            r.seconds,
        ]
        for r in summary.models
    ]
    cli_support.stdout.print(
        cli_support.table(
            "retrieval train",
            ["model", "examples", "steps", "epoch kept", "held-out MRR@10", "loss", "seconds"],
            rows,
        )
    )
    cli_support.console.print(f"negatives: {summary.negatives} ({summary.false_negatives} dropped)")


@retrieval_app.command("eval")
def eval_command(
    beir_dir: Annotated[
        Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.")
    ],
    model: Annotated[
        Path | None,
        typer.Option(help="A fine-tuned bi-encoder folder (default: base MiniLM only)."),
    ] = None,
    reranker: Annotated[
        Path | None, typer.Option(help="A cross-encoder folder: adds `+ reranker` rows.")
    ] = None,
    split: Annotated[str, typer.Option(help="qrels split to score.")] = "test",
    rerank_depth: Annotated[
        int, typer.Option(help="Documents the reranker reorders per query.")
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON rows.")] = False,
) -> None:
    """Score BM25, base and fine-tuned MiniLM, their hybrids and reranking on a BEIR folder."""
    models: dict[str, Path | None] = {"MiniLM (base)": None}
    if model is not None:
        models[f"MiniLM fine-tuned ({model.name})"] = model
    rows = eval_job(
        beir_dir, split=split, models=models, reranker=reranker, rerank_depth=rerank_depth
    )
    if as_json:
        cli_support.stdout.print_json(json.dumps(rows))
        return
    body = [
        [_system(r), f"{r['ndcg@10']:.4f}", f"{r['recall@100']:.4f}", f"{r['mrr@10']:.4f}"]
        for r in rows
    ]
    cli_support.stdout.print(
        cli_support.table(
            f"retrieval eval ({split}, {rows[0]['queries']} queries)",
            ["system", "nDCG@10", "Recall@100", "MRR@10"],
            body,
        )
    )


def _system(row: dict[str, Any]) -> str:
    """A row's system, with the hybrid's dense weight."""
    weight = row.get("dense_weight")
    return row["system"] if weight is None else f"{row['system']}, dense weight {weight}"
