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

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from synthgraph.graphs.batch import run_batch
from synthgraph.graphs.cli_support import console, fail, stdout, table
from synthgraph.graphs.retrieval import RetrievalContext, context_examples, graph
from synthgraph.tools.io import InputError, TextRecord, content_id, load_texts
from synthgraph.tools.log import get_logger
from synthgraph.tools.retrieval_data import STYLES
from synthgraph.tools.runs import Run, RunError

log = get_logger(__name__)
PAIRS = "pairs.jsonl"
retrieval_app = typer.Typer(help="Retrieval training data: generate queries, filter, train, evaluate.", no_args_is_help=True)


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


def corpus_documents(source: Path, text_field: str = "text", id_field: str = "_id") -> tuple[list[TextRecord], list[Any]]:
    """Documents of a BEIR corpus.jsonl, or any folder/JSONL/Parquet/CSV `load_texts` reads."""
    documents, problems = load_texts(source, text_field=text_field, id_field=id_field)
    with_titles = [
        TextRecord(d.id, f"{d.meta['title']}. {d.text}", d.source, d.meta) if d.meta.get("title") else d
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
    max_minutes: float | None = None,
    text_field: str = "text",
    id_field: str = "_id",
    show_progress: bool = True,
) -> GenerateSummary:
    """Queries for (a seeded sample of) the corpus, in a resumable run folder.

    `max_minutes` stops between chunks of documents once the time is up; the
    run resumes later from where it stopped.
    """
    context = context or RetrievalContext()
    config = {"corpus": str(corpus), "limit": limit, "seed": seed, "context": asdict(context)}
    run = Run.open("retrieval", out=out, resume=resume, config=config)
    if resume:  # a resumed run keeps the knobs it started with
        config = run.manifest["config"]
        context = RetrievalContext(**config["context"])
        limit, seed = config["limit"], config["seed"]
    context_examples(context)  # a bad example file fails now, not once per document
    documents, problems = corpus_documents(Path(config["corpus"]), text_field, id_field)
    already = run.rejected_ids()
    for problem in problems:
        if problem.record not in already:
            run.rejects.reject(problem.record, "load", problem.cause)
    random.Random(seed).shuffle(documents)
    documents = documents[:limit] if limit else documents

    def process(document: TextRecord) -> list[dict[str, Any]]:
        result = graph.invoke({"document_id": document.id, "document": document.text}, context=context)
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
            stage="generate",
            description="writing queries",
            show_progress=show_progress,
        )
        summary.skipped += result.skipped
    run.timing("generate", time.monotonic() - started)
    summary.seconds["generate"] = round(time.monotonic() - started, 1)
    summary.pairs = sum(1 for _ in _lines(run.path(PAIRS)))
    run.finish(status="stopped" if summary.stopped_early else "done", pairs=summary.pairs)
    summary.rejects = run.manifest["counts"].get("rejects", 0)
    return summary


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text("utf-8").splitlines() if line.strip()] if path.exists() else []


@retrieval_app.command("generate")
def generate_command(
    corpus: Annotated[Path, typer.Argument(help="BEIR corpus.jsonl (or a folder / JSONL / Parquet / CSV of texts).")],
    out: Annotated[Path | None, typer.Option(help="Run folder (default: data/runs/<id>).")] = None,
    style: Annotated[str, typer.Option(help="promptagator, vanilla or gbq.")] = "promptagator",
    examples: Annotated[Path | None, typer.Option(help="Example set (JSONL, or JSON with task + examples).")] = None,
    per_doc: Annotated[int, typer.Option("--per-doc", help="Queries sampled per document.")] = 1,
    limit: Annotated[int | None, typer.Option(help="Use a seeded random sample of this many documents.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the document sample.")] = 13,
    max_tokens: Annotated[int, typer.Option(help="Completion cap per query.")] = 48,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.7,
    max_minutes: Annotated[float | None, typer.Option(help="Stop after about this long (resume later).")] = None,
    resume: Annotated[str | None, typer.Option(help="Resume a run by id or folder.")] = None,
    text_field: Annotated[str, typer.Option(help="Text field of JSONL/Parquet/CSV input.")] = "text",
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
    )
    try:
        summary = generate_job(
            corpus, out, context=context, limit=limit, seed=seed, resume=resume,
            max_minutes=max_minutes, text_field=text_field, id_field=id_field,
        )  # fmt: skip
    except (InputError, RunError) as error:
        fail(str(error))
    rows = [[k, v] for k, v in asdict(summary).items() if k != "seconds"]
    stdout.print(table("retrieval generate", ["", "value"], rows))
    console.print(f"pairs: {summary.run_dir}/{PAIRS}")
