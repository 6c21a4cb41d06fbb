"""The retrieval jobs: unlabelled corpus → query pairs → training triples → trained retriever.

- `generate_job`: the retrieval graph once per corpus document → `pairs.jsonl`
  (one append per document, so a killed run resumes where it stopped).
- `filter_job`: an optional word-overlap cap, then InPars-v1 log-prob, InPars-v2
  reranker, Promptagator round-trip and usefulness (hard-but-answerable) filters
  (each switchable and counted, with the word-overlap profile of kept, dropped and
  real queries), then BM25 + dense hard negatives →
  `train_triples.jsonl` and the sentence-transformers dataset `train_st.jsonl`.
- `train_job`: fresh BM25 + dense hard negatives guarded against false negatives,
  then the MiniLM bi-encoder (MultipleNegativesRankingLoss) for several epochs,
  early-stopped on held-out pairs, optionally a cross-encoder reranker, on CPU.
- `eval_job`: nDCG@10, Recall@100, MRR@10 on a BEIR folder (BM25, dense, and
  a dev-tuned mix of their scores, each optionally reranked).

The filters, negatives, training and metrics are services in `tools/retrieval_*.py`.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from synthgraph.agents.resilience import rejection
from synthgraph.graphs.batch import run_batch, unique_items
from synthgraph.graphs.jobs import open_job
from synthgraph.graphs.retrieval.graph import RetrievalContext, context_examples, graph
from synthgraph.tools.embeddings import get_embeddings
from synthgraph.tools.io import (
    InputError,
    TextRecord,
    content_id,
    count_records,
    read_jsonl,
    write_json,
    write_records,
)
from synthgraph.tools.log import get_logger
from synthgraph.tools.retrieval_data import (
    BeirSet,
    corpus_documents,
    corpus_file,
    judged_pairs,
    load_beir,
    load_corpus,
    load_triples,
)
from synthgraph.tools.retrieval_filters import (
    hard_negative_triples,
    logprob_filter,
    overlap_filter,
    overlap_limit,
    overlap_profile,
    reranker_filter,
    roundtrip_filter,
    useful_filter,
    word_overlaps,
)
from synthgraph.tools.retrieval_index import Bm25Index, DenseIndex, Hits, mix
from synthgraph.tools.retrieval_metrics import score_hits
from synthgraph.tools.retrieval_training import (
    Reranker,
    TrainReport,
    guarded_triples,
    reranker_scores,
    train_bi_encoder,
    train_cross_encoder,
    triple_documents,
)
from synthgraph.tools.runs import MANIFEST, RunError, saved_config
from synthgraph.tools.settings import get_settings
from synthgraph.tools.usage import Budget

log = get_logger(__name__)
PAIRS = "pairs.jsonl"
FILTERS = ("logprob", "reranker", "roundtrip", "useful")
RANKERS = ("bm25", "dense")
TRIPLES = "train_triples.jsonl"
ST_DATASET = "train_st.jsonl"


def vectors_cache() -> Path:
    """Where dense corpus vectors are cached, per model and per text."""
    return get_settings().cache_dir / "retrieval-vectors"


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
    budget: Budget | None = None,
) -> GenerateSummary:
    """Queries for (a seeded sample of) the corpus, in a resumable run folder.

    On `resume`, `context=None` goes on with the run's own knobs (context, limit,
    seed); knobs given must be the run's. `max_minutes` stops between chunks of
    documents once the time is up; the run resumes later from where it stopped.
    """
    config = None
    if resume is None or context is not None:
        context = context or RetrievalContext()
        config = {"corpus": str(corpus), "limit": limit, "seed": seed, "context": asdict(context)}
    # Read before the run folder opens, so bad input leaves no run folder behind.
    documents, problems = corpus_documents(corpus, text_field, id_field)
    run, config = open_job(
        "retrieval", config, out=out, resume=resume, problems=problems, budget=budget
    )
    if config["corpus"] != str(corpus):  # one run never mixes the documents of two corpora
        raise RunError(
            f"cannot resume {run.root}: it was started on {config['corpus']}, not {corpus}"
        )
    limit, seed = config["limit"], config["seed"]
    context = RetrievalContext(**config["context"])
    # The caller's example file is read here, wherever it is (a bad one fails now, not once
    # per document); the graph itself reads example files only inside the workspace.
    context = replace(context, examples=context_examples(context, confined=False))
    temperature = get_settings().temperature if context.temperature is None else context.temperature
    if context.samples > 1 and temperature == 0:
        # Not refused: the samples still see the examples in different orders.
        log.warning(
            "retrieval.greedy_samples",
            samples=context.samples,
            note="temperature 0: samples differ only by example order, expect duplicates",
        )
    # Checked on the whole corpus: the batches below see only a chunk each.
    documents = unique_items(documents, lambda d: d.id, source=str(corpus), dedupe=dedupe_ids)
    random.Random(seed).shuffle(documents)
    documents = documents[:limit] if limit else documents

    def process(document: TextRecord) -> list[dict[str, Any]]:
        result = graph.invoke(
            {"document_id": document.id, "document": document.text}, context=context
        )
        queries = result["queries"]
        if not queries:
            raise ValueError("the model wrote no usable query")
        # All samples of a document are one record set: a resumed run never repeats a sample.
        overlaps = word_overlaps([(q["query"], document.text) for q in queries])
        return [
            {
                "id": content_id(document.id, q["query"]),
                "source_id": document.id,
                "query": q["query"],
                "logprob": q["logprob"],
                "sample": q["sample"],
                "overlap": round(overlap, 3),
                "style": context.style,
            }
            for q, overlap in zip(queries, overlaps, strict=True)
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
            source=str(corpus),
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


# --- filter and hard negatives --------------------------------------------------
@dataclass
class FilterSummary:
    out_dir: str
    pairs: int
    kept: int
    triples: int
    filters: list[dict[str, Any]] = field(default_factory=list)
    overlap: dict[str, dict[str, Any]] = field(default_factory=dict)
    """`overlap_profile` of the kept pairs, the dropped ones and, when known, real queries."""
    seconds: dict[str, float] = field(default_factory=dict)


def real_queries(corpus_path: Path) -> list[tuple[str, str]] | None:
    """(query, document) texts judged in `qrels/dev.tsv` of the BEIR folder holding the
    corpus, or None when the corpus is not in one. Dev only: test stays unseen."""
    path = corpus_file(corpus_path)
    folder = path.parent
    if path.name != "corpus.jsonl" or not all(
        (folder / name).is_file() for name in ("queries.jsonl", "qrels/dev.tsv")
    ):
        return None
    return judged_pairs(load_beir(folder, "dev"))


def examples_overlap(config: dict[str, Any]) -> float:
    """The overlap cap "auto": the 90th percentile of the word overlap of the run's examples."""
    context = RetrievalContext(**config.get("context", {}))
    examples = context_examples(context, confined=False).examples
    return overlap_limit([(e.query, e.document) for e in examples])


def filter_job(
    run_dir: Path,
    *,
    filters: list[str],
    out: Path | None = None,
    corpus_path: Path | None = None,
    keep: float = 0.7,
    top_k: int = 10,
    useful_ranks: tuple[int, int] = (2, 100),
    useful_sources: tuple[str, ...] = RANKERS,
    max_overlap: float | Literal["auto"] | None = None,
    negatives: int = 3,
    negative_sources: tuple[str, ...] = RANKERS,
    reranker: Path | None = None,
    retriever: Path | None = None,
    seed: int = 13,
) -> FilterSummary:
    """Filter the pairs of a generate run, mine hard negatives, export training triples.

    Without `reranker`, the InPars-v2 filter uses a cross-encoder initialised
    from MiniLM and trained on the pairs themselves, cross-fitted: each half is
    scored by a model trained on the other half, so no pair scores itself. The
    summary's `overlap` compares kept and dropped queries with the real dev queries
    of the corpus's BEIR folder, when it has them; each filter's entry has the profile
    of what it kept and dropped.

    The usefulness filter keeps a pair when the best rank of its source by the
    `useful_sources` retrievers lies in `useful_ranks` (inclusive). `max_overlap`
    first drops queries copying their document beyond that word overlap; "auto" is
    the 90th percentile of the run's few-shot examples.
    """
    unknown = [f for f in filters if f not in FILTERS]
    if unknown:
        raise InputError(
            f"unknown filter(s) {', '.join(unknown)}; choose from {', '.join(FILTERS)}"
        )
    if "useful" in filters and (not useful_sources or not set(useful_sources) <= set(RANKERS)):
        raise InputError(f"useful filter: rank by {' and/or '.join(RANKERS)}, not {useful_sources}")
    if "useful" in filters and not 1 <= useful_ranks[0] <= useful_ranks[1]:
        raise InputError(f"useful filter: need 1 <= min rank <= max rank, not {useful_ranks}")
    run, config = open_job("retrieval", None, resume=str(run_dir))
    filtered = bool(filters) or max_overlap is not None
    out = out or run.root / ("filtered" if filtered else "unfiltered")
    corpus_path = corpus_path or Path(config["corpus"])
    corpus = load_corpus(corpus_path)
    pairs: dict[str, dict[str, Any]] = {}  # by id: the same query for the same document counts once
    orphans = []
    for pair in read_jsonl(run.path(PAIRS)):
        if pair["source_id"] in corpus:
            pairs.setdefault(pair["id"], pair)
        else:
            orphans.append(
                rejection(
                    pair["id"],
                    "filter",
                    f"source document {pair['source_id']!r} is not in the corpus",
                )
            )
    run.import_rejects(orphans)
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

    def profile(chosen: list[dict[str, Any]]) -> dict[str, Any]:
        return overlap_profile([(p["query"], corpus[p["source_id"]]) for p in chosen])

    cap = examples_overlap(config) if max_overlap == "auto" else max_overlap
    kept = list(pairs.values())
    # The overlap cap goes first: the other filters then never score copies.
    for name in filters if cap is None else ["overlap", *filters]:
        started = time.monotonic()
        before = kept
        if name == "overlap" and cap is not None:
            overlaps = word_overlaps([(p["query"], corpus[p["source_id"]]) for p in kept])
            note = f"word overlap at most {cap:.2f}" + (
                " (90th percentile of the examples)" if max_overlap == "auto" else ""
            )
            kept, report = overlap_filter(kept, overlaps, cap, note)
        elif name == "logprob":
            requested = bool(config.get("context", {}).get("logprobs", True))
            kept, report = logprob_filter(kept, keep, requested)
        elif name == "reranker":
            scores, note = reranker_scores(kept, corpus, reranker, out, seed)
            kept, report = reranker_filter(kept, scores, keep, note)
        elif name == "useful":
            low, high = useful_ranks
            queries = [p["query"] for p in kept]
            rankings = [
                (Bm25Index(corpus) if source == "bm25" else dense_index()).search(queries, high)
                for source in useful_sources
            ]
            names = [
                str(retriever or "base MiniLM") if s == "dense" else "BM25" for s in useful_sources
            ]
            kept, report = useful_filter(
                kept, rankings, low, high, f"best rank {low}..{high} by {' or '.join(names)}"
            )
        else:
            hits = dense_index().search([p["query"] for p in kept], top_k)
            kept, report = roundtrip_filter(
                kept, hits, top_k, f"source in the top {top_k} of {retriever or 'base MiniLM'}"
            )
        kept_now = {p["id"] for p in kept}
        summary.filters.append(
            {
                **asdict(report),
                "removed": report.removed,
                "overlap": {
                    "kept": profile(kept),
                    "dropped": profile([p for p in before if p["id"] not in kept_now]),
                },
            }
        )
        summary.seconds[name] = round(time.monotonic() - started, 1)
        log.info(
            "retrieval.filter",
            filter=name,
            before=report.before,
            kept=report.kept,
            note=report.note,
        )

    kept_ids = {p["id"] for p in kept}
    summary.overlap["kept"] = profile(kept)
    summary.overlap["dropped"] = profile([p for p in pairs.values() if p["id"] not in kept_ids])
    real = real_queries(corpus_path)
    if real is not None:
        summary.overlap["real"] = overlap_profile(real)

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


# --- train ----------------------------------------------------------------------
@dataclass
class TrainSummary:
    models: list[TrainReport]
    """The bi-encoder's report, then the cross-encoder's if one was trained."""
    negatives: str = "as mined by `retrieval filter`"
    """Where the hard negatives came from and what judged false negatives."""
    false_negatives: int = 0
    """Negative candidates dropped because they scored nearly as high as the positive."""


def find_triples(folder: Path) -> Path:
    """The triples of a filter output folder, or of a run folder's filtered/unfiltered output."""
    for candidate in (
        folder / TRIPLES,
        folder / "filtered" / TRIPLES,
        folder / "unfiltered" / TRIPLES,
    ):
        if candidate.is_file():
            return candidate
    raise InputError(f"{folder}: no {TRIPLES} (run `synthgraph retrieval filter` first)")


def triples_corpus(triples_path: Path) -> Path | None:
    """The corpus of the generate run whose filter output holds `triples_path`, if it is one."""
    for folder in (triples_path.parent, triples_path.parent.parent):
        if (folder / MANIFEST).is_file():
            corpus = saved_config(str(folder)).get("corpus")
            return Path(corpus) if corpus else None
    return None


def train_job(
    folder: Path,
    out: Path,
    *,
    epochs: int = 4,
    holdout_share: float = 0.1,
    negative_sources: tuple[str, ...] = ("bm25", "dense"),
    batch_size: int = 32,
    cached_loss: bool = False,
    negatives: int = 1,
    learning_rate: float = 2e-5,
    corpus_path: Path | None = None,
    reranker: Path | None = None,
    cross_encoder: Path | None = None,
    seed: int = 13,
) -> TrainSummary:
    """Fine-tune MiniLM on the triples in `folder` into `out`; with `cross_encoder`, a
    reranker too.

    With `negative_sources` (bm25, dense), each query gets fresh hard negatives from the
    corpus (`corpus_path`, else the generate run's, else the triples' own documents),
    guarded against false negatives by `reranker` or else the base dense model; empty, the
    triples' negatives are used as they are. A `holdout_share` of the source documents is
    held out for early stopping (see `train_bi_encoder`)."""
    unknown = [s for s in negative_sources if s not in ("bm25", "dense")]
    if unknown:
        raise InputError(f"unknown negative source(s) {', '.join(unknown)}; choose bm25, dense")
    path = find_triples(folder)
    triples = load_triples(path)
    if not triples:
        raise InputError(f"{path}: no training triples")
    summary = TrainSummary([])
    if negative_sources:
        corpus_path = corpus_path or triples_corpus(path)
        corpus = triple_documents(triples)  # every source is in, whatever the corpus holds
        corpus.update(load_corpus(corpus_path) if corpus_path else {})
        dense: DenseIndex | None = None

        def dense_index() -> DenseIndex:
            nonlocal dense
            if dense is None:
                dense = DenseIndex(corpus, get_embeddings(), cache_dir=vectors_cache())
            return dense

        started = time.monotonic()
        triples, summary.false_negatives, judge = guarded_triples(
            triples, corpus, negatives, negative_sources, dense_index, reranker, seed
        )
        source = corpus_path or "the documents of the triples"
        summary.negatives = (
            f"{' + '.join(negative_sources)} over {source}; false negatives judged by the {judge}"
        )
        log.info(
            "retrieval.train.negatives",
            note=summary.negatives,
            dropped=summary.false_negatives,
            seconds=round(time.monotonic() - started, 1),
        )
    report = train_bi_encoder(
        triples, out, epochs=epochs, batch_size=batch_size, negatives=negatives,
        learning_rate=learning_rate, holdout_share=holdout_share, cached_loss=cached_loss,
        seed=seed,
    )  # fmt: skip
    summary.models.append(report)
    if cross_encoder is not None:
        summary.models.append(
            train_cross_encoder(triples, cross_encoder, epochs=epochs, batch_size=batch_size)
        )
    return summary


# --- eval -----------------------------------------------------------------------
HYBRID_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""The dense list's weights in the hybrid tried when tuning (1 minus it is BM25's)."""


def eval_job(
    beir_dir: Path,
    *,
    split: str = "test",
    models: dict[str, Path | None] | None = None,
    reranker: Path | None = None,
    rerank_depth: int = 20,
    rerank: list[str] | None = None,
    bm25: bool = True,
    tune_split: str | None = "dev",
) -> list[dict[str, Any]]:
    """nDCG@10, Recall@100 and MRR@10 per system: BM25, each bi-encoder, the hybrid of
    BM25 and each bi-encoder (`BM25 + <name> (hybrid)`), and each + reranker.

    `models` maps a name to a sentence-transformers folder (None: the base
    MiniLM). The hybrid mixes the scaled scores of the top 100 of both (`mix`); the dense
    list's weight (`dense_weight` in the row) is the one of `HYBRID_WEIGHTS` that scores best
    on `tune_split`'s queries, when the folder has that split, else 0.5. The
    reranker reorders the top `rerank_depth` of each first stage named in `rerank` (default:
    all). Returns one row per system.
    """
    for path in (models or {}).values():
        if path is not None and not any(
            (path / f).is_file() for f in ("modules.json", "config.json")
        ):
            raise InputError(f"{path}: not a sentence-transformers model folder")
    data = load_beir(beir_dir, split)
    if not data.queries:
        raise InputError(f"{beir_dir}: no judged queries in qrels/{split}.tsv")
    tuning: BeirSet | None = None  # read before any index is built: bad input fails at once
    if bm25 and tune_split is not None:
        tuning = data if tune_split == split else _tuning_queries(beir_dir, tune_split, data)
    query_ids = list(data.queries)
    texts = [data.queries[q] for q in query_ids]
    first_stages: dict[str, list[Hits]] = {}
    weights: dict[str, float] = {}
    bm25_index = Bm25Index(data.corpus) if bm25 else None
    tuning_texts: list[str] = []
    tuning_bm25: list[Hits] = []
    if bm25_index is not None:
        first_stages["BM25"] = bm25_index.search(texts, 100)
        # Tuned on the split being scored, the hybrid reuses its lists rather than search again.
        if tuning is data:
            tuning_bm25 = first_stages["BM25"]
        elif tuning is not None:
            tuning_texts = list(tuning.queries.values())
            tuning_bm25 = bm25_index.search(tuning_texts, 100)
    dense = models or {"MiniLM (base)": None}
    for name, path in dense.items():
        index = DenseIndex(data.corpus, get_embeddings(path), cache_dir=vectors_cache())
        first_stages[name] = index.search(texts, 100)
        if bm25_index is None:
            continue
        weight = 0.5
        if tuning is not None:
            tuning_dense = first_stages[name] if tuning is data else index.search(tuning_texts, 100)
            weight = _tuned_weight(tuning_bm25, tuning_dense, tuning)
        hybrid = f"BM25 + {name} (hybrid)"
        weights[hybrid] = weights[f"{hybrid} + reranker"] = weight
        first_stages[hybrid] = _hybrid(first_stages["BM25"], first_stages[name], weight)
    rows = [score_hits(name, query_ids, hits, data.qrels) for name, hits in first_stages.items()]
    if reranker is not None:
        model = Reranker(reranker)
        for name, hits in first_stages.items():
            if rerank is not None and name not in rerank:
                continue
            reranked = model.rerank(texts, hits, data.corpus, rerank_depth)
            rows.append(score_hits(f"{name} + reranker", query_ids, reranked, data.qrels))
    for row in rows:
        if row["system"] in weights:
            row["dense_weight"] = weights[row["system"]]
    return rows


def _tuning_queries(beir_dir: Path, split: str, scored: BeirSet) -> BeirSet | None:
    """The judged queries of `split`, to tune the hybrid on (the corpus is `scored`'s);
    None without that split."""
    if not (Path(beir_dir) / "qrels" / f"{split}.tsv").is_file():
        return None
    data = load_beir(beir_dir, split, corpus=scored.corpus)
    return data if data.queries else None


def _tuned_weight(bm25: list[Hits], dense: list[Hits], tuning: BeirSet) -> float:
    """The dense weight of `HYBRID_WEIGHTS` with the best nDCG@10 on the tuning queries,
    given both lists for each of them in order (ties go to the one nearest an even mix)."""
    query_ids = list(tuning.queries)

    def quality(weight: float) -> tuple[float, float]:
        fused = _hybrid(bm25, dense, weight)
        return score_hits("", query_ids, fused, tuning.qrels)["ndcg@10"], -abs(weight - 0.5)

    return max(HYBRID_WEIGHTS, key=quality)


def _hybrid(bm25: list[Hits], dense: list[Hits], weight: float) -> list[Hits]:
    """Each query's BM25 and dense lists mixed, the dense one weighted `weight`; top 100."""
    return [mix(both, (1 - weight, weight))[:100] for both in zip(bm25, dense, strict=True)]
