"""Benchmark: Promptagator-style training data → fine-tuned MiniLM, on one or more BEIR folders.

The whole loop on each BEIR folder given to `--data` (default
`../shared/data/debian-descriptions` relative to the repository root), outputs in
`--out/<folder name>/`: generate queries for a seeded random sample of corpus documents
(never from the queries file) with the embedded model, filter, mine hard negatives, train
the bi-encoder on unfiltered and on filtered pairs (guarded hard negatives; up to
`--epochs` epochs, early-stopped on held-out pairs), train a cross-encoder reranker, and
evaluate on dev (and on test with --test). Every stage is resumable: run it again and it
continues where it stopped. The run ends with one table per collection: BM25, base MiniLM,
the fine-tuned models and the hybrids (BM25 + dense, a dev-tuned mix of scores), BM25, base,
filtered fine-tuned and its hybrid also reranked once a reranker is trained; then the
minutes per stage.

    python benchmarks/retrieval.py                          # about an hour: 1,500 documents,
                                                            # 2 epochs, dev only
    python benchmarks/retrieval.py --stages eval --test     # report test once
    python benchmarks/build_manpages.py --out data/manpages-beir
    python benchmarks/retrieval.py --data ../shared/data/debian-descriptions data/manpages-beir
    python benchmarks/retrieval.py --data ../shared/data/debian-descriptions data/manpages-beir \
        --stages eval --test                                # both tables, test scored once
    python benchmarks/retrieval.py --data DIR --stages eval # BM25, base and hybrid before training
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

from synthgraph.graphs.retrieval.graph import RetrievalContext
from synthgraph.graphs.retrieval.job import (
    TRIPLES,
    eval_job,
    filter_job,
    generate_job,
    load_triples,
    train_job,
)
from synthgraph.tools.io import read_jsonl, write_json, write_records
from synthgraph.tools.retrieval_data import load_qrels
from synthgraph.tools.retrieval_training import train_cross_encoder

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "debian-descriptions"
EXAMPLES = (
    Path(__file__).resolve().parent.parent / "examples" / "retrieval" / "software_packages.json"
)


def working_corpus(data: Path, generation: Path, out: Path, size: int, seed: int = 7) -> Path:
    """A BEIR folder over part of the corpus: every judged document, every document the
    generator wrote queries for, and seeded random distractors up to `size` (0: the whole
    corpus). Encoding 20,000 documents once per model does not fit the CPU budget of this
    machine; the subset keeps the task at a smaller scale. Rebuilt when new documents
    got queries (vectors are cached per text, so only those are encoded again)."""
    rows = {row["_id"]: row for row in read_jsonl(data / "corpus.jsonl")}
    keep: list[str] = []
    for split in ("dev", "test"):
        keep += [doc for rel in load_qrels(data / "qrels" / f"{split}.tsv").values() for doc in rel]
    existing = (
        [row["_id"] for row in read_jsonl(out / "corpus.jsonl")]
        if (out / "corpus.jsonl").exists()
        else []
    )
    sources = (
        [p["source_id"] for p in read_jsonl(generation / "pairs.jsonl")]
        if (generation / "pairs.jsonl").exists()
        else []
    )
    if existing and set(sources) <= set(existing):
        return out
    keep = list(dict.fromkeys(keep + sources))
    others = [doc for doc in rows if doc not in set(keep)]
    random.Random(seed).shuffle(others)
    chosen = set(keep) | set(others[: max(0, size - len(keep))]) if size else set(rows)
    if existing:  # grow the folder the earlier stages used, never reshuffle it
        chosen = set(existing) | set(sources)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    write_records([rows[doc] for doc in rows if doc in chosen], out / "corpus.jsonl")
    shutil.copy(data / "queries.jsonl", out / "queries.jsonl")
    for split in ("dev", "test"):
        shutil.copy(data / "qrels" / f"{split}.tsv", out / "qrels" / f"{split}.tsv")
    return out


FINE_TUNED = "MiniLM fine-tuned, filtered"
# The first stages the reranker reorders: one per kind of system, so the table shows each
# with and without it while the cross-encoder runs on four lists, not on every one.
RERANKED = ("BM25", "MiniLM (base)", FINE_TUNED, f"BM25 + {FINE_TUNED} (hybrid)")
Results = dict[str, list[dict[str, object]]]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        type=Path,
        nargs="+",
        default=[DATA],
        help="BEIR folders (corpus.jsonl, queries.jsonl, qrels/), one loop and table each",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("data/bench/retrieval"), help="outputs: OUT/<folder name>/"
    )
    parser.add_argument(
        "--docs", type=int, default=1500, help="corpus documents to write queries for"
    )
    parser.add_argument(
        "--gen-minutes", type=float, default=25.0, help="time budget of generation per collection"
    )
    parser.add_argument(
        "--logprobs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ask for token log-probs (the InPars-v1 logprob filter needs them; cheap on the "
        "embedded llama-server)",
    )
    parser.add_argument(
        "--eval-docs", type=int, default=2500, help="size of the evaluation corpus (0: all)"
    )
    parser.add_argument(
        "--keep", type=float, default=0.8, help="fraction kept by the logprob and reranker filters"
    )
    parser.add_argument("--top-k", type=int, default=10, help="round-trip filter depth")
    parser.add_argument(
        "--epochs",
        type=int,
        default=2,
        help="most bi-encoder epochs (early stopping may stop sooner); 2 keeps a collection's "
        "loop near an hour on 2 cores",
    )
    parser.add_argument(
        "--holdout-share",
        type=float,
        default=0.1,
        help="share of source documents held out for early stopping",
    )
    parser.add_argument(
        "--negative-sources",
        default="bm25,dense",
        help="bi-encoder hard negatives, guarded against false negatives ('' keeps the filter's)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="queries per training step")
    parser.add_argument(
        "--cached-loss",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="cached (GradCache) loss, for batches larger than memory allows",
    )
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument(
        "--negatives", type=int, default=1, help="hard negatives per query in the loss"
    )
    parser.add_argument("--stages", default="generate,filter,train,eval")
    parser.add_argument(
        "--test", action="store_true", help="also evaluate on test (do it once, at the end)"
    )
    args = parser.parse_args()
    names = [data.name for data in args.data]
    if len(set(names)) < len(names):
        parser.error(f"--data folders need distinct names (outputs go to --out/<name>): {names}")
    tables = {data.name: run_collection(data, args.out / data.name, args) for data in args.data}
    for name, (results, timings) in tables.items():
        if results:
            print_table(name, results, timings, args.out / name)


def run_collection(
    data: Path, out: Path, args: argparse.Namespace
) -> tuple[Results, dict[str, float]]:
    """The loop's stages on one BEIR folder, outputs under `out`; returns the eval results
    (empty without the eval stage) and the timings of every stage run so far."""
    print(f"== {data.name}")
    stages = set(args.stages.split(","))
    generation = out / "generation"
    models = out / "models"
    # Stages may run in separate invocations; keep the timings of earlier ones.
    earlier = out / "results.json"
    saved = json.loads(earlier.read_text()) if earlier.exists() else {}
    timings: dict[str, float] = saved.get("timings", {})
    results: Results = saved.get("results", {})  # splits evaluated before stay on file
    evaluated: list[str] = []

    def save() -> None:
        """Written after every stage, so a stage's minutes survive a later crash."""
        timings["total"] = sum(v for k, v in timings.items() if k != "total")
        write_json({"results": results, "timings": timings, "args": vars(args)}, earlier)

    if "generate" in stages:
        started = time.monotonic()
        context = RetrievalContext(
            style="promptagator",
            examples_path=str(EXAMPLES),
            samples=1,
            max_tokens=32,
            max_doc_chars=400,
            logprobs=args.logprobs,
        )
        resume = str(generation) if (generation / "manifest.json").exists() else None
        summary = generate_job(
            data / "corpus.jsonl",
            generation,
            context=context,
            limit=args.docs,
            resume=resume,
            dedupe_ids=True,  # a corpus may repeat an id (the Debian one does); keep the first
            max_minutes=args.gen_minutes,
            show_progress=False,
        )
        timings["generate"] = time.monotonic() - started
        save()
        print(
            f"generate: {summary.pairs} pairs, {summary.rejects} rejects, stopped early: {summary.stopped_early}"
        )
    beir = working_corpus(data, generation, out / "beir-subset", args.eval_docs)
    corpus = beir / "corpus.jsonl"

    if ("stats" in stages or "filter" in stages) and (generation / "pairs.jsonl").exists():
        print_query_stats(generation, beir)

    if "filter" in stages:
        started = time.monotonic()
        for name, filters in (
            ("unfiltered", []),
            ("filtered", ["logprob", "reranker", "roundtrip"]),
        ):
            summary = filter_job(
                generation, filters=filters, out=out / name, corpus_path=corpus,
                keep=args.keep, top_k=args.top_k, negatives=3,
            )  # fmt: skip
            print(f"{name}: {summary.pairs} pairs → {summary.kept} kept, {summary.triples} triples")
            for report in summary.filters:
                print(
                    f"  {report['name']}: {report['before']} → {report['kept']} ({report['note']})"
                )
        timings["filter"] = time.monotonic() - started
        save()

    if "train" in stages:
        started = time.monotonic()
        for name in ("unfiltered", "filtered"):
            summary = train_job(
                out / name, models / f"minilm-{name}", epochs=args.epochs,
                holdout_share=args.holdout_share,
                negative_sources=tuple(s for s in args.negative_sources.split(",") if s),
                batch_size=args.batch_size, cached_loss=args.cached_loss,
                negatives=args.negatives, learning_rate=args.learning_rate, corpus_path=corpus,
            )  # fmt: skip
            print(
                f"train {name}: {summary.models[0]}; negatives: {summary.negatives} "
                f"({summary.false_negatives} dropped)"
            )
        # InPars-v2's reranker learns from the filtered pairs, as the filtered bi-encoder does;
        # one epoch (it repeats a small set up to its minimum number of steps).
        report = train_cross_encoder(load_triples(out / "filtered" / TRIPLES), models / "reranker")
        print(f"train reranker: {report}")
        timings["train"] = time.monotonic() - started
        save()

    if "eval" in stages:
        # Models not trained yet are left out, so BM25, base and their hybrid can be
        # evaluated before (or without) the generation.
        systems: dict[str, Path | None] = {"MiniLM (base)": None}
        for name in ("unfiltered", "filtered"):
            if trained(models / f"minilm-{name}"):
                systems[f"MiniLM fine-tuned, {name}"] = models / f"minilm-{name}"
        reranker = models / "reranker" if trained(models / "reranker") else None
        for split in ("dev", "test") if args.test else ("dev",):
            started = time.monotonic()
            results[split] = eval_job(
                beir, split=split, models=systems, reranker=reranker, rerank_depth=10,
                rerank=list(RERANKED),
            )  # fmt: skip
            timings[f"eval_{split}"] = time.monotonic() - started
            evaluated.append(split)
            save()
    print(json.dumps({"timings": {k: round(v, 1) for k, v in timings.items()}}))
    return {split: results[split] for split in evaluated}, timings


def trained(model: Path) -> bool:
    """Whether a training stage has saved a model in this folder."""
    return any((model / name).is_file() for name in ("modules.json", "config.json"))


def print_query_stats(generation: Path, beir: Path) -> None:
    """How the generated queries compare with the real ones (style, length, overlap with judged documents)."""
    pairs = list(read_jsonl(generation / "pairs.jsonl"))
    queries = {row["_id"]: row["text"] for row in read_jsonl(beir / "queries.jsonl")}
    dev = load_qrels(beir / "qrels" / "dev.tsv")
    judged = {doc for rel in dev.values() for doc in rel}
    words = [len(p["query"].split()) for p in pairs]
    real = [len(queries[q].split()) for q in dev]
    sources = {p["source_id"] for p in pairs}
    print(
        f"queries: {len(pairs)} generated for {len(sources)} documents; mean words {sum(words) / max(1, len(words)):.1f} "
        f"(dev queries: {sum(real) / len(real):.1f}); dev positives with a generated query: {len(sources & judged)}"
    )


def print_table(collection: str, results: Results, timings: dict[str, float], out: Path) -> None:
    """One collection's table: each first stage, then the same list reranked when it was;
    the minutes per stage; how many pairs each filter kept."""
    splits = list(results)
    rows = {row["system"]: i for i, row in enumerate(results[splits[0]])}
    order = [name for name in rows if not str(name).endswith(" + reranker")]
    order = [n for name in order for n in (name, f"{name} + reranker") if n in rows]
    print(
        f"\n{collection}\n{'system':60}"
        + "".join(f"{'nDCG@10 ' + s:>14}{'R@100 ' + s:>12}{'MRR@10 ' + s:>13}" for s in splits)
    )
    for name in order:
        weight = results[splits[0]][rows[name]].get("dense_weight")
        line = f"{name!s:60}" if weight is None else f"{f'{name} w={weight}':60}"
        for split in splits:
            r = results[split][rows[name]]
            line += f"{r['ndcg@10']:>14.4f}{r['recall@100']:>12.4f}{r['mrr@10']:>13.4f}"
        print(line)
    print("minutes: " + ", ".join(f"{k} {v / 60:.1f}" for k, v in timings.items()))
    for name in ("unfiltered", "filtered"):
        path = out / name / "filter_report.json"
        if not path.exists():
            continue
        report = json.loads(path.read_text())
        kept = (
            ", ".join(f"{f['name']} kept {f['kept']}/{f['before']}" for f in report["filters"])
            or "no filter"
        )
        print(f"{name}: {report['pairs']} pairs → {report['triples']} triples ({kept})")


if __name__ == "__main__":
    main()
