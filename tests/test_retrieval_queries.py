"""Query diversity and usefulness: per-document samples, the contrast prompt, the overlap cap,
the hard-but-answerable filter."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field
from structlog.testing import capture_logs
from typer.testing import CliRunner

from synthgraph.agents.llm import use_chat_models
from synthgraph.agents.retrieval import example_orders, query_messages
from synthgraph.graphs.cli import app
from synthgraph.graphs.retrieval.graph import RetrievalContext, graph
from synthgraph.graphs.retrieval.job import PAIRS, filter_job, generate_job
from synthgraph.tools.io import read_jsonl, write_records
from synthgraph.tools.retrieval_data import Example, ExampleSet
from synthgraph.tools.retrieval_filters import overlap_filter, useful_filter
from synthgraph.tools.runs import Run

BEIR = Path(__file__).parent / "retrieval_beir"
EXAMPLES = ExampleSet(
    (
        Example("Quillpad is a terminal text editor.", "terminal text editor"),
        Example("Skylog collects logs over the network.", "network log collector"),
        Example("Tide is a family of serif fonts.", "serif font family"),
    )
)


class OrderEcho(BaseChatModel):
    """Replies `<document's first word> <example documents' first letters, in prompt order>`,
    so each query names the example ordering it was written after (any thread order)."""

    seen: list[str] = Field(default_factory=list)
    lock: Any = Field(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "order-echo"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **_: Any
    ) -> ChatResult:
        documents = [
            str(m.content).removeprefix("Document: ") for m in messages if m.type == "human"
        ]
        order = "".join(d[0] for d in documents[:-1])
        with self.lock:
            self.seen.append(order)
        query = f"{documents[-1].split()[0].lower()} {order}"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=query))])


# --- per-document samples -------------------------------------------------------------
def test_example_orders_are_distinct_while_permutations_last() -> None:
    orders = example_orders(3, 6, "doc")
    assert orders[0] == [0, 1, 2] and len({tuple(o) for o in orders}) == 6
    assert example_orders(3, 6, "doc") == orders  # seeded: a re-run sees the same prompts
    two = example_orders(2, 4, "doc")  # past the 2 permutations, orders repeat
    assert len(two) == 4 and two[:2] == [[0, 1], [1, 0]]
    assert len(example_orders(1, 3, "doc")) == 3


def test_per_doc_samples_come_from_distinct_example_orders() -> None:
    fake = OrderEcho()
    with use_chat_models(generator=fake):
        result = graph.invoke(
            {"document_id": "ftpdeck", "document": "FtpDeck is a graphical FTP client."},
            context=RetrievalContext(examples=EXAMPLES, samples=3, temperature=0.7),
        )
    assert fake.seen[0] == "QST" and len(set(fake.seen)) == 3
    assert [q["sample"] for q in result["queries"]] == [0, 1, 2]
    assert [q["query"] for q in result["queries"]] == [f"ftpdeck {o}" for o in fake.seen]


def test_per_doc_records_are_one_set_per_document_and_resume_adds_none(tmp_path: Path) -> None:
    out = tmp_path / "run"
    context = RetrievalContext(examples=EXAMPLES, samples=3, temperature=0.7)
    with use_chat_models(generator=OrderEcho()):
        generate_job(BEIR, out, context=context, limit=3, show_progress=False)
    pairs = list(read_jsonl(out / PAIRS))
    assert len(pairs) == 9 and len({p["id"] for p in pairs}) == 9
    by_doc = {p["source_id"] for p in pairs}
    assert all(
        sorted(p["sample"] for p in pairs if p["source_id"] == d) == [0, 1, 2] for d in by_doc
    )
    assert all(0 <= p["overlap"] <= 1 for p in pairs)
    # Killed after the first document's record set: the resume writes only the other two.
    first = pairs[0]["source_id"]
    write_records([p for p in pairs if p["source_id"] == first], out / PAIRS)
    fake = OrderEcho()
    with use_chat_models(generator=fake):
        again = generate_job(BEIR, out, resume=str(out), show_progress=False)
    resumed = list(read_jsonl(out / PAIRS))
    assert (again.skipped, len(fake.seen)) == (1, 6)
    assert sorted(p["id"] for p in resumed) == sorted(p["id"] for p in pairs)


def test_several_samples_at_temperature_zero_are_warned_about(tmp_path: Path) -> None:
    context = RetrievalContext(examples=EXAMPLES, samples=2, temperature=0.0)
    with use_chat_models(generator=OrderEcho()), capture_logs() as logs:
        generate_job(BEIR, tmp_path / "run", context=context, limit=1, show_progress=False)
    assert [e["samples"] for e in logs if e["event"] == "retrieval.greedy_samples"] == [2]


# --- the contrast prompt -----------------------------------------------------------------
def test_contrast_prompt_pairs_a_copying_bad_question_with_the_good_one() -> None:
    messages = query_messages("Doc.", EXAMPLES, "contrast")
    assert "copies" in messages[0][1]
    assert messages[2] == (
        "assistant",
        "Bad question: quillpad is a terminal text\nGood question: terminal text editor",
    )


# --- overlap cap and usefulness filter -----------------------------------------------------
def make_run(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    run = Run.open("retrieval", out=tmp_path / "run", config={"corpus": str(BEIR / "corpus.jsonl")})
    pairs = [{"id": f"{i:02}", "source_id": s, "query": q} for i, (s, q) in enumerate(rows)]
    write_records(pairs, run.path(PAIRS))
    return run.root


def test_useful_filter_keeps_hard_but_answerable_pairs() -> None:
    pairs = [{"source_id": s} for s in ("copy", "mid", "absent")]
    hits = [[("copy", 9.0), ("x", 1.0)], [("x", 9.0), ("mid", 5.0)], [("x", 9.0)]]
    kept, report = useful_filter(pairs, [hits], min_rank=2, max_rank=100)
    assert kept == [{"source_id": "mid"}] and (report.before, report.kept) == (3, 1)
    # The best rank over the retrievers counts: one that already ranks "mid" first drops it.
    easy = [[("copy", 1.0)], [("mid", 1.0)], []]
    assert useful_filter(pairs, [hits, easy], 2, 100)[0] == []
    assert useful_filter(pairs, [hits], 1, 1)[0] == [{"source_id": "copy"}]  # rank 2 > max
    with pytest.raises(ValueError, match="min rank"):
        useful_filter(pairs, [hits], 3, 2)


def test_filter_job_useful_keeps_a_mid_rank_pair_only(tmp_path: Path) -> None:
    run_dir = make_run(
        tmp_path,
        [
            ("ftpdeck", "graphical ftp client resumes broken downloads"),  # BM25 rank 1
            ("ftpdeck-doc", "ftp client resumes broken downloads"),  # rank 2 (behind ftpdeck)
            ("tidefonts", "knitting patterns"),  # not found at all
        ],
    )
    summary = filter_job(
        run_dir,
        filters=["useful"],
        useful_sources=("bm25",),
        negatives=1,
        negative_sources=("bm25",),
    )
    kept = list(read_jsonl(Path(summary.out_dir) / "filtered_pairs.jsonl"))
    assert [p["source_id"] for p in kept] == ["ftpdeck-doc"]
    (useful,) = summary.filters
    assert (useful["name"], useful["before"], useful["kept"], useful["removed"]) == (
        "useful",
        3,
        1,
        2,
    )
    assert useful["overlap"]["kept"]["queries"] == 1
    assert useful["overlap"]["dropped"]["queries"] == 2


def test_max_overlap_drops_a_copying_query(tmp_path: Path) -> None:
    run_dir = make_run(
        tmp_path,
        [
            ("chesslab", "chesslab chess game desktop engine"),  # every word from the document
            ("chesslab", "play chess against the computer"),  # 1 of 3 content words
        ],
    )
    overlap = overlap_filter([{"q": 1}, {"q": 2}], [1.0, 0.3], 0.5)
    assert overlap[0] == [{"q": 2}] and overlap[1].removed == 1
    for cap in ("auto", 0.5):
        summary = filter_job(
            run_dir, filters=[], max_overlap=cap, negatives=1, negative_sources=("bm25",)
        )
        kept = list(read_jsonl(Path(summary.out_dir) / "filtered_pairs.jsonl"))
        assert [p["query"] for p in kept] == ["play chess against the computer"]
        assert [(f["name"], f["kept"]) for f in summary.filters] == [("overlap", 1)]


def test_cli_filter_useful_with_overlap_cap_and_bad_cap(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [("ftpdeck-doc", "ftp client resumes broken downloads")])
    runner = CliRunner()
    args = ["retrieval", "filter", str(run_dir), "--filters", "useful", "--rank-by", "bm25"]
    result = runner.invoke(
        app, [*args, "--max-overlap", "auto", "--negative-sources", "bm25", "--negatives", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "useful: kept" in result.stdout and "overlap: dropped" in result.stdout
    bad = runner.invoke(app, [*args, "--max-overlap", "lots"])
    assert bad.exit_code == 2 and "--max-overlap must be" in " ".join(bad.output.split())
