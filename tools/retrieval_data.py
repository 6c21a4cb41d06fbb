"""Retrieval data on disk: BEIR folders, few-shot example sets, pairs and triples.

A BEIR folder holds `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl`
(`_id`, `text`) and `qrels/<split>.tsv` (`query-id`, `corpus-id`, `score`).
Example sets are what the user gives the query generator: JSONL lines (or a
JSON object with `task` and `examples`) of `document`, `query` and, for GBQ,
`bad_query`. `copying_query` makes the bad question of the contrast style.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from synthgraph.tools.io import (
    InputError,
    InputProblem,
    TextRecord,
    load_texts,
    read_jsonl,
    reading,
)
from synthgraph.tools.text import clip

Style = Literal["promptagator", "vanilla", "gbq", "contrast"]
STYLES: tuple[Style, ...] = ("promptagator", "vanilla", "gbq", "contrast")
"""gbq's bad question is vague (from the example set); contrast's copies the document's words
(derived from each example, so any example set works)."""
MAX_EXAMPLES = 8  # Promptagator's few-shot budget


@dataclass(frozen=True)
class Example:
    document: str
    query: str
    bad_query: str | None = None


@dataclass(frozen=True)
class ExampleSet:
    examples: tuple[Example, ...]
    task: str | None = None


@dataclass
class BeirSet:
    """A BEIR-format folder in memory: documents, queries and relevance judgements."""

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)


def load_examples(path: Path, style: Style) -> ExampleSet:
    """An example set from JSONL, or JSON with `task` and `examples`; errors name the example."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such example file")
    task: str | None = None
    rows: list[dict[str, Any]]
    if path.suffix.lower() == ".json":
        with reading(path):
            data = json.loads(path.read_text("utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
            raise InputError(f"{path}: expected an object with an `examples` list")
        task = data.get("task") or None
        rows = data["examples"]
    else:
        rows = list(read_jsonl(path))
    if not rows:
        raise InputError(f"{path}: no examples")
    if len(rows) > MAX_EXAMPLES:
        raise InputError(f"{path}: {len(rows)} examples; give at most {MAX_EXAMPLES}")
    examples = []
    for number, row in enumerate(rows, start=1):
        where = f"{path}: example {number}"
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected an object")
        for name in ("document", "query"):
            if not isinstance(row.get(name), str) or not row[name].strip():
                raise InputError(f"{where}: field {name!r} is missing or empty")
        bad = row.get("bad_query")
        if style == "gbq" and (not isinstance(bad, str) or not bad.strip()):
            raise InputError(f"{where}: GBQ examples need a `bad_query` (a vague question)")
        examples.append(
            Example(row["document"].strip(), row["query"].strip(), bad.strip() if bad else None)
        )
    return ExampleSet(tuple(examples), task)


def copying_query(example: Example) -> str:
    """A bad query for the contrast style: the opening words of the example's document,
    two more than its good query has — what a model writes when it copies instead of asking."""
    words = example.document.split()[: len(example.query.split()) + 2]
    return " ".join(words).rstrip(".,;:").lower()


def shorten(text: str, max_chars: int) -> str:
    """The text on one line, cut at a word boundary to about `max_chars` (prompts stay short)."""
    return clip(" ".join(text.split()), max_chars)


def load_beir(
    folder: Path, split: str | None = None, corpus: dict[str, str] | None = None
) -> BeirSet:
    """A BEIR folder; with `split`, only the queries judged in `qrels/<split>.tsv`.
    `corpus`, when given, is the folder's corpus already loaded (it is not read again)."""
    folder = Path(folder)
    corpus_path = folder / "corpus.jsonl"
    if not corpus_path.is_file():
        raise InputError(f"{folder}: no corpus.jsonl (expected a BEIR folder)")
    if corpus is None:
        corpus = load_corpus(corpus_path)
    queries: dict[str, str] = {}
    queries_path = folder / "queries.jsonl"
    if queries_path.is_file():
        for number, row in enumerate(read_jsonl(queries_path), start=1):
            if "_id" not in row or not isinstance(row.get("text"), str):
                raise InputError(f"{queries_path}:{number}: a query needs `_id` and `text`")
            queries[str(row["_id"])] = row["text"]
    qrels: dict[str, dict[str, int]] = {}
    if split is not None:
        qrels = load_qrels(folder / "qrels" / f"{split}.tsv")
        missing = [q for q in qrels if q not in queries]
        if missing:
            raise InputError(
                f"{folder}: qrels/{split}.tsv names queries not in queries.jsonl: {missing[:3]}"
            )
        queries = {q: queries[q] for q in qrels}
    return BeirSet(corpus, queries, qrels)


def judged_pairs(data: BeirSet) -> list[tuple[str, str]]:
    """(query, document) texts of every judgement above 0 whose document is in the corpus."""
    return [
        (data.queries[query], data.corpus[doc])
        for query, relevance in data.qrels.items()
        for doc, score in relevance.items()
        if score > 0 and doc in data.corpus
    ]


def corpus_file(path: Path) -> Path:
    """A BEIR folder stands for its `corpus.jsonl`; any other path for itself."""
    path = Path(path)
    return path / "corpus.jsonl" if (path / "corpus.jsonl").is_file() else path


def corpus_documents(
    source: Path, text_field: str = "text", id_field: str = "_id"
) -> tuple[list[TextRecord], list[InputProblem]]:
    """Documents of a BEIR folder or corpus.jsonl, or any folder/JSONL/Parquet/CSV of texts."""
    documents, problems = load_texts(corpus_file(source), text_field=text_field, id_field=id_field)
    with_titles = [
        TextRecord(d.id, f"{d.meta['title']}. {d.text}", d.source, d.meta)
        if d.meta.get("title")
        else d
        for d in documents
    ]
    return with_titles, problems


def load_corpus(path: Path) -> dict[str, str]:
    """`_id` → text (title and text joined) from a BEIR `corpus.jsonl` (or its folder)."""
    path = corpus_file(path)
    corpus: dict[str, str] = {}
    for number, row in enumerate(read_jsonl(path), start=1):
        if "_id" not in row or not isinstance(row.get("text"), str):
            raise InputError(f"{path}:{number}: a document needs `_id` and `text`")
        title = (row.get("title") or "").strip()
        corpus[str(row["_id"])] = f"{title}. {row['text']}" if title else row["text"]
    return corpus


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """query id → {document id: relevance} from a BEIR qrels TSV (header line optional)."""
    if not path.is_file():
        raise InputError(f"{path}: no such qrels file")
    qrels: dict[str, dict[str, int]] = {}
    with reading(path), path.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or (number == 1 and row[0] == "query-id"):
                continue
            try:
                query_id, doc_id, score = row[0], row[1], int(row[2])
            except (IndexError, ValueError) as error:
                raise InputError(
                    f"{path}:{number}: expected `query-id<TAB>corpus-id<TAB>score`"
                ) from error
            qrels.setdefault(query_id, {})[doc_id] = score
    return qrels


def load_triples(path: Path) -> list[dict[str, Any]]:
    """Training triples (`query`, `positive`, `negatives`) from JSONL; errors name the line."""
    triples = []
    for number, row in enumerate(read_jsonl(path), start=1):
        if not isinstance(row.get("query"), str) or not isinstance(row.get("positive"), str):
            raise InputError(f"{path}:{number}: a triple needs `query` and `positive` text")
        if not isinstance(row.get("negatives"), list):
            raise InputError(f"{path}:{number}: `negatives` must be a list of texts")
        triples.append(row)
    return triples


def default_examples_path() -> Path:
    """The generic built-in example set (InPars-vanilla style: not tied to any task)."""
    from importlib import resources

    return Path(
        str(resources.files("synthgraph.prompts").joinpath("retrieval/default_examples.jsonl"))
    )
