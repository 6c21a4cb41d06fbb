"""`synthgraph retrieval generate|filter|train|eval`: unlabelled corpus → trained retriever.

- generate: the retrieval graph once per corpus document → `pairs.jsonl`
  (one append per document, so a killed run resumes where it stopped).
- filter: InPars-v1 log-prob, InPars-v2 reranker and Promptagator round-trip
  filters (each switchable and counted), then BM25 + dense hard negatives →
  `train_triples.jsonl` and the sentence-transformers dataset `train_st.jsonl`.
- train: MiniLM bi-encoder (MultipleNegativesRankingLoss), optionally a
  cross-encoder reranker, on CPU.
- eval: nDCG@10, Recall@100, MRR@10 on a BEIR folder.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from synthgraph.graphs.batch import run_batch, unique_items
from synthgraph.graphs.cli_support import (
    DedupeIds,
    MaxRejectRate,
    RetryRejects,
    console,
    exit_on_rejects,
    fail,
    resuming_as_started,
    stdout,
    table,
)
from synthgraph.graphs.retrieval import RetrievalContext, context_examples, graph
from synthgraph.tools.embeddings import get_embeddings
from synthgraph.tools.io import (
    InputError,
    TextRecord,
    content_id,
    count_records,
    load_texts,
    read_jsonl,
    write_json,
    write_records,
)
from synthgraph.tools.log import get_logger
from synthgraph.tools.retrieval_data import STYLES, corpus_file, load_beir, load_corpus
from synthgraph.tools.retrieval_filters import (
    logprob_filter,
    mine_negatives,
    reranker_filter,
    roundtrip_filter,
)
from synthgraph.tools.retrieval_index import Bm25Index, DenseIndex
from synthgraph.tools.retrieval_metrics import evaluate_rankings
from synthgraph.tools.retrieval_training import Reranker, train_bi_encoder, train_cross_encoder
from synthgraph.tools.runs import Run
from synthgraph.tools.settings import get_settings

log = get_logger(__name__)
PAIRS = "pairs.jsonl"
retrieval_app = typer.Typer(
    help="Retrieval training data: generate queries, filter, train, evaluate.", no_args_is_help=True
)


# --- generate -------------------------------------------------------------------
@dataclass
class GenerateSummary:
    run_dir: str
    documents: int = 0
    pairs: int = 0
    rejects: int = 0
    skipped: int = 0
    stopped_early: bool = False
    seconds: dict[str, float] = field(default_factory=dict)


def corpus_documents(
    source: Path, text_field: str = "text", id_field: str = "_id"
) -> tuple[list[TextRecord], list[Any]]:
    """Documents of a BEIR folder or corpus.jsonl, or any folder/JSONL/Parquet/CSV of texts."""
    documents, problems = load_texts(corpus_file(source), text_field=text_field, id_field=id_field)
    with_titles = [
        TextRecord(d.id, f"{d.meta['title']}. {d.text}", d.source, d.meta)
        if d.meta.get("title")
        else d
        for d in documents
    ]
    return with_titles, problems


def generate_job(
    corpus: Path,
    out: Path | None,
    *,
    context: RetrievalContext | None = None,
    limit: int | None = None,
    seed: int = 13,
    resume: str | None = None,
    retry_rejects: bool = True,
    dedupe_ids: bool = False,
    max_minutes: float | None = None,
    text_field: str = "text",
    id_field: str = "_id",
    show_progress: bool = True,
) -> GenerateSummary:
    """Queries for (a seeded sample of) the corpus, in a resumable run folder.

    `max_minutes` stops between chunks of documents once the time is up; the
    run resumes later from where it stopped.
    """
    # Resuming without knobs keeps the run's; knobs given must be the run's (Run.open checks).
    keep = resume is not None and context is None
    context = context or RetrievalContext()
    config = {"corpus": str(corpus), "limit": limit, "seed": seed, "context": asdict(context)}
    # A new run reads its input first, so bad input leaves no run folder behind.
    loaded = None if resume else corpus_documents(corpus, text_field, id_field)
    run = Run.open("retrieval", out=out, resume=resume, config=None if keep else config)
    if resume:  # a resumed run keeps the knobs it started with
        config = run.manifest["config"]
        context = RetrievalContext(**config["context"])
        limit, seed = config["limit"], config["seed"]
    # The caller's example file is read here, wherever it is (a bad one fails now, not once
    # per document); the graph itself reads example files only inside the workspace.
    context = replace(context, examples=context_examples(context, confined=False))
    documents, problems = loaded or corpus_documents(Path(config["corpus"]), text_field, id_field)
    run.reject_inputs(problems)
    # Checked on the whole corpus: the batches below see only a chunk each.
    documents = unique_items(documents, lambda d: d.id, source=config["corpus"], dedupe=dedupe_ids)
    random.Random(seed).shuffle(documents)
    documents = documents[:limit] if limit else documents

    def process(document: TextRecord) -> list[dict[str, Any]]:
        result = graph.invoke(
            {"document_id": document.id, "document": document.text}, context=context
        )
        if not result["queries"]:
            raise ValueError("the model wrote no usable query")
        return [
            {
                "id": content_id(document.id, q["query"]),
                "source_id": document.id,
                "query": q["query"],
                "logprob": q["logprob"],
                "style": context.style,
            }
            for q in result["queries"]
        ]

    summary = GenerateSummary(str(run.root), documents=len(documents))
    started = time.monotonic()
    chunk = 25 if max_minutes else len(documents) or 1
    for first in range(0, len(documents), chunk):
        if max_minutes and time.monotonic() - started > max_minutes * 60:
            summary.stopped_early = True
            break
        result = run_batch(
            run,
            documents[first : first + chunk],
            process,
            item_id=lambda d: d.id,
            output=PAIRS,
            content=lambda d: d.text,
            source=config["corpus"],
            retry_rejects=retry_rejects,
            stage="generate",
            description="writing queries",
            show_progress=show_progress,
        )
        summary.skipped += result.skipped
    run.timing("generate", time.monotonic() - started)
    summary.seconds["generate"] = round(time.monotonic() - started, 1)
    summary.pairs = count_records(run.path(PAIRS))
    run.finish(status="stopped" if summary.stopped_early else "done", pairs=summary.pairs)
    summary.rejects = run.manifest["counts"].get("rejects", 0)
    return summary


@retrieval_app.command("generate")
def generate_command(
    ctx: typer.Context,
    corpus: Annotated[
        Path,
        typer.Argument(help="BEIR folder or corpus.jsonl, or a folder / JSONL / Parquet / CSV."),
    ],
    out: Annotated[Path | None, typer.Option(help="Run folder (default: data/runs/<id>).")] = None,
    style: Annotated[str, typer.Option(help="promptagator, vanilla or gbq.")] = "promptagator",
    examples: Annotated[
        Path | None, typer.Option(help="Example set (JSONL, or JSON with task + examples).")
    ] = None,
    per_doc: Annotated[int, typer.Option("--per-doc", help="Queries sampled per document.")] = 1,
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
    resume: Annotated[str | None, typer.Option(help="Resume a run by id or folder.")] = None,
    retry_rejects: RetryRejects = True,
    dedupe_ids: DedupeIds = False,
    max_reject_rate: MaxRejectRate = 0.5,
    text_field: Annotated[
        str, typer.Option(help="Text field of JSONL/Parquet/CSV input.")
    ] = "text",
    id_field: Annotated[str, typer.Option(help="Id field of JSONL/Parquet/CSV input.")] = "_id",
) -> None:
    """Write search queries for corpus documents (Promptagator / InPars prompts)."""
    if style not in STYLES:
        fail(f"--style must be one of {', '.join(STYLES)}, not {style!r}")
    context = RetrievalContext(
        style=style,  # type: ignore[arg-type]
        examples_path=str(examples) if examples else None,
        samples=per_doc,
        max_tokens=max_tokens,
        temperature=temperature,
        logprobs=logprobs,
    )
    summary = generate_job(
        corpus, out, context=None if resuming_as_started(ctx, resume) else context, limit=limit,
        seed=seed, resume=resume,
        retry_rejects=retry_rejects, dedupe_ids=dedupe_ids, max_minutes=max_minutes,
        text_field=text_field, id_field=id_field,
    )  # fmt: skip
    rows = [[k, v] for k, v in asdict(summary).items() if k != "seconds"]
    stdout.print(table("retrieval generate", ["", "value"], rows))
    console.print(f"pairs: {summary.run_dir}/{PAIRS}")
    exit_on_rejects(summary.run_dir, max_reject_rate)


# --- filter and hard negatives --------------------------------------------------
FILTERS = ("logprob", "reranker", "roundtrip")
TRIPLES = "train_triples.jsonl"
ST_DATASET = "train_st.jsonl"


@dataclass
class FilterSummary:
    out_dir: str
    pairs: int
    kept: int
    triples: int
    filters: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def vectors_cache() -> Path:
    return get_settings().cache_dir / "retrieval-vectors"


def filter_job(
    run_dir: Path,
    *,
    filters: list[str],
    out: Path | None = None,
    corpus_path: Path | None = None,
    keep: float = 0.7,
    top_k: int = 10,
    negatives: int = 3,
    negative_sources: tuple[str, ...] = ("bm25", "dense"),
    reranker: Path | None = None,
    retriever: Path | None = None,
    seed: int = 13,
) -> FilterSummary:
    """Filter the pairs of a generate run, mine hard negatives, export training triples.

    Without `reranker`, the InPars-v2 filter uses a cross-encoder initialised
    from MiniLM and trained on the pairs themselves, cross-fitted: each half is
    scored by a model trained on the other half, so no pair scores itself.
    """
    unknown = [f for f in filters if f not in FILTERS]
    if unknown:
        raise InputError(
            f"unknown filter(s) {', '.join(unknown)}; choose from {', '.join(FILTERS)}"
        )
    run = Run.open("retrieval", resume=str(run_dir))
    out = out or run.root / ("filtered" if filters else "unfiltered")
    corpus = load_corpus(corpus_path or Path(run.manifest["config"]["corpus"]))
    pairs: dict[str, dict[str, Any]] = {}  # by id: the same query for the same document counts once
    already = run.rejected_ids()
    for pair in read_jsonl(run.path(PAIRS)):
        if pair["source_id"] in corpus:
            pairs.setdefault(pair["id"], pair)
        elif pair["id"] not in already:
            run.rejects.reject(
                pair["id"], "filter", f"source document {pair['source_id']!r} is not in the corpus"
            )
    if not pairs:
        raise InputError(f"{run.root}: no usable pairs in {PAIRS}")
    summary = FilterSummary(str(out), pairs=len(pairs), kept=0, triples=0)
    base_retriever = get_embeddings(retriever) if retriever else get_embeddings()
    dense: DenseIndex | None = None

    def dense_index() -> DenseIndex:
        nonlocal dense
        if dense is None:
            dense = DenseIndex(corpus, base_retriever, cache_dir=vectors_cache())
        return dense

    kept = list(pairs.values())
    for name in filters:
        started = time.monotonic()
        if name == "logprob":
            requested = bool(run.manifest["config"].get("context", {}).get("logprobs", True))
            kept, report = logprob_filter(kept, keep, requested)
        elif name == "reranker":
            scores, note = reranker_scores(kept, corpus, reranker, out, seed)
            kept, report = reranker_filter(kept, scores, keep, note)
        else:
            hits = dense_index().search([p["query"] for p in kept], top_k)
            kept, report = roundtrip_filter(
                kept, hits, top_k, f"source in the top {top_k} of {retriever or 'base MiniLM'}"
            )
        summary.filters.append({**asdict(report), "removed": report.removed})
        summary.seconds[name] = round(time.monotonic() - started, 1)
        log.info(
            "retrieval.filter",
            filter=name,
            before=report.before,
            kept=report.kept,
            note=report.note,
        )

    started = time.monotonic()
    triples = hard_negative_triples(
        kept,
        corpus,
        negatives,
        negative_sources,
        dense_index if "dense" in negative_sources else None,
        seed,
    )
    summary.seconds["negatives"] = round(time.monotonic() - started, 1)
    summary.kept, summary.triples = len(kept), len(triples)
    write_records(kept, out / "filtered_pairs.jsonl")
    write_records(triples, out / TRIPLES)
    write_records(
        [
            {
                "anchor": t["query"],
                "positive": t["positive"],
                **{f"negative_{i + 1}": n for i, n in enumerate(t["negatives"])},
            }
            for t in triples
        ],
        out / ST_DATASET,
    )
    write_json(asdict(summary), out / "filter_report.json")
    run.count(**{f"kept_{out.name}": len(kept)})
    return summary


def hard_negative_triples(
    pairs: list[dict[str, Any]],
    corpus: dict[str, str],
    count: int,
    sources: tuple[str, ...],
    dense_index: Any,
    seed: int,
) -> list[dict[str, Any]]:
    """(query, positive, negatives) with BM25 and/or dense hard negatives, never the positive."""
    queries = [p["query"] for p in pairs]
    depth = count + 10
    ranked: list[list[Any]] = []
    if "bm25" in sources:
        ranked.append(Bm25Index(corpus).search(queries, depth))
    if "dense" in sources and dense_index is not None:
        ranked.append(dense_index().search(queries, depth))
    rng = random.Random(seed)
    triples = []
    for i, pair in enumerate(pairs):
        negative_ids = mine_negatives(pair["source_id"], [r[i] for r in ranked], corpus, count, rng)
        triples.append(
            {
                "query": pair["query"],
                "positive": corpus[pair["source_id"]],
                "negatives": [corpus[n] for n in negative_ids],
                "source_id": pair["source_id"],
                "negative_ids": negative_ids,
            }
        )
    return triples


def reranker_scores(
    pairs: list[dict[str, Any]], corpus: dict[str, str], reranker: Path | None, out: Path, seed: int
) -> tuple[list[float], str]:
    """Cross-encoder scores of (query, source document): a given model, or a cross-fitted MiniLM one."""
    texts = [(p["query"], corpus[p["source_id"]]) for p in pairs]
    if reranker is not None:
        return Reranker(reranker).score(texts), f"scored by {reranker}"
    folds = [
        [i for i in range(len(pairs)) if int(pairs[i]["id"], 16) % 2 == fold] for fold in (0, 1)
    ]
    scores: list[float] = [0.0] * len(pairs)
    for fold, other in ((0, 1), (1, 0)):
        if not folds[fold] or not folds[other]:
            continue
        train = hard_negative_triples(
            [pairs[i] for i in folds[other]], corpus, 1, ("bm25",), None, seed
        )
        model_dir = out / f"reranker-fold{fold}"
        train_cross_encoder(train, model_dir, seed=seed)
        fold_scores = Reranker(model_dir).score([texts[i] for i in folds[fold]])
        for i, score in zip(folds[fold], fold_scores, strict=True):
            scores[i] = score
    return (
        scores,
        "cross-encoder from MiniLM, trained on the other half of the pairs (cross-fitted)",
    )


@retrieval_app.command("filter")
def filter_command(
    run_dir: Annotated[Path, typer.Argument(help="A `retrieval generate` run folder.")],
    filters: Annotated[
        str, typer.Option(help="Comma list of logprob, reranker, roundtrip ('' for none).")
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
    """Filter generated pairs (InPars-v1/v2, Promptagator round-trip) and mine hard negatives."""
    chosen = [f for f in filters.split(",") if f.strip()]
    summary = filter_job(
        run_dir, filters=chosen, out=out, corpus_path=corpus, keep=keep, top_k=top_k, negatives=negatives,
        negative_sources=tuple(s for s in negative_sources.split(",") if s), reranker=reranker, retriever=retriever,
    )  # fmt: skip
    rows = [[f["name"], f["before"], f["kept"], f["removed"], f["note"]] for f in summary.filters]
    stdout.print(table("retrieval filter", ["filter", "before", "kept", "removed", "note"], rows))
    console.print(
        f"{summary.triples} triples: {summary.out_dir}/{TRIPLES} (sentence-transformers: {ST_DATASET})"
    )


# --- train ----------------------------------------------------------------------
def find_triples(folder: Path) -> Path:
    for candidate in (
        folder / TRIPLES,
        folder / "filtered" / TRIPLES,
        folder / "unfiltered" / TRIPLES,
    ):
        if candidate.is_file():
            return candidate
    raise InputError(f"{folder}: no {TRIPLES} (run `synthgraph retrieval filter` first)")


def load_triples(path: Path) -> list[dict[str, Any]]:
    triples = []
    for number, row in enumerate(read_jsonl(path), start=1):
        if not isinstance(row.get("query"), str) or not isinstance(row.get("positive"), str):
            raise InputError(f"{path}:{number}: a triple needs `query` and `positive` text")
        if not isinstance(row.get("negatives"), list):
            raise InputError(f"{path}:{number}: `negatives` must be a list of texts")
        triples.append(row)
    return triples


@retrieval_app.command("train")
def train_command(
    folder: Annotated[
        Path, typer.Argument(help="Folder with train_triples.jsonl (or a run folder).")
    ],
    out: Annotated[Path, typer.Option(help="Model folder to write.")],
    epochs: Annotated[int, typer.Option(help="Passes over the triples.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Queries per step (in-batch negatives).")] = 32,
    negatives: Annotated[int, typer.Option(help="Hard negatives per query used in the loss.")] = 1,
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate.")] = 2e-5,
    cross_encoder: Annotated[
        Path | None, typer.Option(help="Also train a MiniLM cross-encoder reranker here.")
    ] = None,
) -> None:
    """Fine-tune MiniLM (MultipleNegativesRankingLoss + hard negatives), optionally a reranker."""
    try:
        triples = load_triples(find_triples(folder))
        report = train_bi_encoder(
            triples,
            out,
            epochs=epochs,
            batch_size=batch_size,
            negatives=negatives,
            learning_rate=learning_rate,
        )
        reports = [report]
        if cross_encoder is not None:
            reports.append(
                train_cross_encoder(triples, cross_encoder, epochs=epochs, batch_size=batch_size)
            )
    except (InputError, ValueError) as error:
        fail(str(error))
    rows = [
        [r.model_dir, r.examples, r.steps, f"{r.first_loss:.3f} → {r.last_loss:.3f}", r.seconds]
        for r in reports
    ]
    stdout.print(table("retrieval train", ["model", "examples", "steps", "loss", "seconds"], rows))


# --- eval -----------------------------------------------------------------------
def eval_job(
    beir_dir: Path,
    *,
    split: str = "test",
    models: dict[str, Path | None] | None = None,
    reranker: Path | None = None,
    rerank_depth: int = 20,
    rerank: list[str] | None = None,
    bm25: bool = True,
) -> list[dict[str, Any]]:
    """nDCG@10, Recall@100 and MRR@10 per system: BM25, each bi-encoder, and each + reranker.

    `models` maps a name to a sentence-transformers folder (None: the base
    MiniLM). The reranker reorders the top `rerank_depth` of each first stage
    named in `rerank` (default: all).
    """
    data = load_beir(beir_dir, split)
    if not data.queries:
        raise InputError(f"{beir_dir}: no judged queries in qrels/{split}.tsv")
    query_ids = list(data.queries)
    texts = [data.queries[q] for q in query_ids]
    first_stages: dict[str, list[Any]] = {}
    if bm25:
        first_stages["BM25"] = Bm25Index(data.corpus).search(texts, 100)
    for name, path in (models or {"MiniLM (base)": None}).items():
        index = DenseIndex(data.corpus, get_embeddings(path), cache_dir=vectors_cache())
        first_stages[name] = index.search(texts, 100)
    rows = [_scored(name, query_ids, hits, data.qrels) for name, hits in first_stages.items()]
    if reranker is not None:
        model = Reranker(reranker)
        for name, hits in first_stages.items():
            if rerank is not None and name not in rerank:
                continue
            reranked = model.rerank(texts, hits, data.corpus, rerank_depth)
            rows.append(_scored(f"{name} + reranker", query_ids, reranked, data.qrels))
    return rows


def _scored(
    name: str, query_ids: list[str], hits: list[Any], qrels: dict[str, dict[str, int]]
) -> dict[str, Any]:
    rankings = {q: [doc for doc, _ in found] for q, found in zip(query_ids, hits, strict=True)}
    return {"system": name, **evaluate_rankings(rankings, qrels)}


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
    """Score BM25, the base MiniLM, a fine-tuned model and reranking on a BEIR folder."""
    models: dict[str, Path | None] = {"MiniLM (base)": None}
    if model is not None:
        if not (model / "modules.json").is_file() and not (model / "config.json").is_file():
            fail(f"{model}: not a sentence-transformers model folder")
        models[f"MiniLM fine-tuned ({model.name})"] = model
    rows = eval_job(
        beir_dir, split=split, models=models, reranker=reranker, rerank_depth=rerank_depth
    )
    if as_json:
        stdout.print_json(json.dumps(rows))
        return
    body = [
        [r["system"], f"{r['ndcg@10']:.4f}", f"{r['recall@100']:.4f}", f"{r['mrr@10']:.4f}"]
        for r in rows
    ]
    stdout.print(
        table(
            f"retrieval eval ({split}, {rows[0]['queries']} queries)",
            ["system", "nDCG@10", "Recall@100", "MRR@10"],
            body,
        )
    )
