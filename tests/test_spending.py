"""Issue 17: the response cache, the token and cost ledger, and the caps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeOpenAIServer, serve
from fault_server import FaultyServer
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration
from typer.testing import CliRunner

from synthgraph.agents.llm import get_chat_model, invoke_text
from synthgraph.graphs.batch import run_batch
from synthgraph.graphs.cli import app
from synthgraph.tools.io import InputError
from synthgraph.tools.response_cache import ResponseCache, SqliteStore, request_key
from synthgraph.tools.runs import Run
from synthgraph.tools.settings import get_settings
from synthgraph.tools.usage import Budget, Caps, Ledger, bound, load_prices, price_of

PRICES = {"fake-model": {"input": 1000.0, "output": 2000.0}}  # USD per 1M: $0.003 a fake call


def _price_file(folder: Path) -> Path:
    path = folder / "prices.json"
    path.write_text(json.dumps(PRICES))
    return path


# --- the ledger ------------------------------------------------------------------------
def test_the_ledger_prices_tokens_per_role_and_stage_and_counts_hits_free(tmp_path: Path) -> None:
    ledger = Ledger(prices=load_prices(_price_file(tmp_path)))
    ledger.record("generator", "fake-model", "write", prompt_tokens=100, completion_tokens=50)
    ledger.record("generator", "fake-model", "write", prompt_tokens=10, completion_tokens=5)
    ledger.record("judge", "fake-model", "judge", prompt_tokens=7, completion_tokens=1)
    ledger.record(
        "judge", "fake-model", "judge", prompt_tokens=99, completion_tokens=99, cached=True
    )
    ledger.record("weak", "qwen-local", "sample", prompt_tokens=500, completion_tokens=500)

    summary = ledger.to_manifest()
    # generator: 110 in × $1000/M + 55 out × $2000/M = 0.11 + 0.11
    assert summary["by_role"]["generator"]["cost_usd"] == pytest.approx(0.22)
    assert summary["by_role"]["judge"] == {
        "calls": 1, "cache_hits": 1, "prompt_tokens": 7, "completion_tokens": 1,
        "cost_usd": pytest.approx(0.009),
    }  # fmt: skip
    assert summary["by_role"]["weak"]["cost_usd"] == 0  # not in the table: tokens at $0
    assert summary["by_stage"]["sample"]["prompt_tokens"] == 500
    assert summary["total"]["tokens"] == 110 + 55 + 8 + 1000
    assert summary["total"]["cost_usd"] == pytest.approx(0.229)

    again = Ledger.from_manifest(summary, prices=ledger.prices)  # a resume goes on counting
    assert again.to_manifest()["total"] == summary["total"]

    batched = Ledger(prices=ledger.prices, batch=True)  # the Batch API bills half
    batched.record("generator", "fake-model", "write", prompt_tokens=110, completion_tokens=55)
    assert batched.total().cost_usd == pytest.approx(0.11)


def test_prices_match_dated_model_names_and_a_bad_table_is_one_line(tmp_path: Path) -> None:
    prices = load_prices(None)
    assert price_of("gpt-4o-mini-2024-07-18", prices) == prices["gpt-4o-mini"]
    assert price_of("gpt-4o-2024-08-06", prices) == prices["gpt-4o"]
    assert price_of("qwen2.5-coder-0.5b", prices) == (0.0, 0.0)
    bad = tmp_path / "prices.json"
    bad.write_text('{"gpt-4o": {"input": "cheap"}}')
    with pytest.raises(InputError, match=r"prices.json: not a price table"):
        load_prices(bad)
    bad.write_bytes(b"\xff\xfe{")
    with pytest.raises(InputError, match=r"prices.json: not UTF-8"):
        load_prices(bad)


def test_caps_say_which_one_would_be_crossed() -> None:
    ledger = Ledger(caps=Caps(max_cost=0.01))
    ledger.apply(Budget(max_total_tokens=100))
    assert ledger.over_cap() is None
    ledger.record("generator", "gpt-4o-mini", "write", prompt_tokens=60, completion_tokens=30)
    assert ledger.over_cap() is None
    assert "--max-total-tokens 100" in (ledger.over_cap(next_tokens=20) or "")
    ledger.apply(Budget(max_cost=0.0))
    assert "--max-cost $0" in (ledger.over_cap() or "")


# --- the response cache ----------------------------------------------------------------
def _reply(text: str) -> list[ChatGeneration]:
    usage = {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
    return [ChatGeneration(message=AIMessage(content=text, usage_metadata=usage))]


def test_identical_requests_are_distinct_samples_and_a_rerun_gets_them_back(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "cache.sqlite")
    first = Ledger()
    with bound(first):
        cache = ResponseCache(store)
        for k in range(3):  # three samples of one request at temperature > 0
            assert cache.lookup("prompt", "llm") is None
            cache.update("prompt", "llm", _reply(f"sample {k}"))
    with bound(Ledger()):  # a new run in another process: the same store, a new cache
        cache = ResponseCache(SqliteStore(tmp_path / "cache.sqlite"))
        replies = [cache.lookup("prompt", "llm") for _ in range(4)]
    assert [r[0].text for r in replies[:3] if r] == ["sample 0", "sample 1", "sample 2"]
    assert replies[3] is None, "a fourth sample was never asked: the endpoint answers it"
    hit = replies[0][0].message  # type: ignore[index]
    assert hit.response_metadata["synthgraph_cache_hit"] and hit.usage_metadata["input_tokens"] == 3


def test_a_retried_request_keeps_its_sample_index(tmp_path: Path) -> None:
    cache = ResponseCache(SqliteStore(tmp_path / "cache.sqlite"))
    with bound(Ledger()):
        assert cache.lookup("p", "llm") is None  # the endpoint failed: no update
        assert cache.lookup("p", "llm") is None  # the retry
        cache.update("p", "llm", _reply("only"))
    with bound(Ledger()):
        hit = cache.lookup("p", "llm")
    assert hit and hit[0].text == "only", "stored as sample 0, not 1"


def test_the_key_is_the_request_not_the_timeout_or_the_api_key() -> None:
    def llm_string(**kwargs: Any) -> str:
        model = {"kwargs": {"model_name": "m", "temperature": 0.7, **kwargs}, "lc": 1}
        return json.dumps(model) + "---[('stop', None)]"

    base = request_key("messages", llm_string())
    assert request_key("messages", llm_string(request_timeout=5, max_retries=2)) == base
    assert request_key("messages", llm_string(openai_api_key="x")) == base
    assert request_key("messages", llm_string(temperature=0.0)) != base
    assert request_key("other messages", llm_string()) != base


def test_the_factory_caches_remote_endpoints_unless_told_not_to(
    fake_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_server.script({"content": "first"}, {"content": "second"})
    with bound(Ledger()):
        assert invoke_text([("user", "hi")]).content == "first"
    with bound(Ledger()):  # another run asks the same: answered from the cache
        assert invoke_text([("user", "hi")]).content == "first"
    assert len(fake_server.requests) == 1
    with bound(Ledger(cache=False)):  # --no-cache
        assert invoke_text([("user", "hi")]).content == "second"
    assert len(fake_server.requests) == 2
    monkeypatch.delenv("SYNTHGRAPH_BASE_URL")
    get_settings.cache_clear()
    assert get_settings().embedded
    from synthgraph.agents import llm

    assert llm._cache_for(get_settings()) is False, "the embedded model is free: no cache"
    assert get_chat_model("judge", settings=get_settings().model_copy(update={"base_url": "x"}))


# --- caps in the executor --------------------------------------------------------------
def test_a_cap_stops_admitting_inputs_and_a_resume_with_a_higher_cap_finishes(
    fake_server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNTHGRAPH_PRICES_FILE", str(_price_file(tmp_path)))
    monkeypatch.setenv("SYNTHGRAPH_MAX_CONCURRENCY", "1")
    get_settings.cache_clear()
    fake_server.script({"content": "ok"})
    items = [f"item {n}" for n in range(10)]

    def process(item: str) -> list[dict[str, Any]]:
        reply = invoke_text([("user", item)])
        return [{"source_id": item, "text": reply.content}]

    def attempt(resume: str | None, max_cost: float) -> Run:
        run = Run.open("spend", out=tmp_path / "run", resume=resume, config={})
        run.ledger.apply(Budget(max_cost=max_cost))
        run_batch(run, items, process, item_id=str, output="out.jsonl", show_progress=False)
        run.finish()
        return run

    first = attempt(None, max_cost=0.0125)  # $0.003 a call: four calls fit
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "stopped" and "--max-cost $0.0125" in manifest["stopped"]
    assert manifest["usage"]["total"]["calls"] == 4
    assert manifest["usage"]["total"]["cost_usd"] == pytest.approx(0.012)
    assert first.ledger.total().cost_usd <= 0.0125

    attempt(str(tmp_path / "run"), max_cost=1.0)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    written = [json.loads(line)["source_id"] for line in (tmp_path / "run" / "out.jsonl").open()]
    assert sorted(written) == sorted(items), "every input exactly once"
    assert manifest["status"] == "done" and "stopped" not in manifest
    assert manifest["usage"]["total"]["calls"] == 10  # both attempts
    assert len(fake_server.requests) == 10


@pytest.fixture
def any_schema_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyServer]:
    """An endpoint that answers every request well (a JSON instance of its schema)."""
    yield from serve(FaultyServer(), monkeypatch)  # type: ignore[misc]


def test_personas_command_prints_spending_and_exits_1_at_the_cap(
    any_schema_server: FaultyServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("SYNTHGRAPH_PRICES_FILE", str(_price_file(tmp_path)))
    monkeypatch.setenv("SYNTHGRAPH_MAX_CONCURRENCY", "1")
    texts = tmp_path / "texts"
    texts.mkdir()
    for n in range(6):
        (texts / f"{n}.txt").write_text(f"Text number {n} about gardening and bees.")
    run_dir = tmp_path / "run"
    args = ["personas", str(texts), "--out", str(run_dir), "--expand-rounds", "0"]
    args += ["--dedup", "none", "--max-cost", "0.005"]
    stopped = CliRunner().invoke(app, args)
    assert stopped.exit_code == 1, stopped.output
    assert "stopped at --max-cost $0.005" in stopped.output
    assert f"--resume {run_dir}" in stopped.output
    assert "spent (all attempts)" in stopped.output and "$0.0030" in stopped.output

    resumed = CliRunner().invoke(
        app, ["personas", str(texts), "--resume", str(run_dir), "--max-cost", "5"]
    )
    assert resumed.exit_code == 0, resumed.output
    generated = [json.loads(line) for line in (run_dir / "generated.jsonl").open()]
    assert len({r["input_id"] for r in generated}) == 6, "every text once"
    usage = json.loads((run_dir / "manifest.json").read_text())["usage"]
    assert usage["by_role"]["generator"]["calls"] == 6
    assert usage["total"]["cost_usd"] == pytest.approx(6 * 0.003)


# --- a re-run with one prompt changed ----------------------------------------------------
def _instruct(seeds: Path, out: Path) -> dict[str, Any]:
    from synthgraph.graphs.agentinstruct.job import InstructOptions, instruct_job

    options = InstructOptions(skills=["open_domain_qa", "text_modification"], dedup="none")
    instruct_job(seeds, out, options=options, show_progress=False)
    return json.loads((out / "manifest.json").read_text())["usage"]


def test_a_rerun_with_one_prompt_changed_calls_only_what_that_prompt_feeds(
    any_schema_server: FaultyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from types import SimpleNamespace

    import synthgraph.prompts as prompts

    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for n in range(3):
        (seeds / f"{n}.txt").write_text(f"Seed {n}: bees carry pollen between {n + 2} flowers.")
    first = _instruct(seeds, tmp_path / "first")
    asked = len(any_schema_server.requests)
    assert first["total"]["calls"] == asked and first["total"]["cache_hits"] == 0

    # The same run again, with the editor's prompt changed.
    changed = tmp_path / "prompts"
    shutil.copytree(Path(prompts.__file__).parent, changed)
    edit = changed / "agentinstruct" / "edit.md"
    edit.write_text(edit.read_text() + "\nKeep the edited instruction short.\n")
    monkeypatch.setattr(prompts, "resources", SimpleNamespace(files=lambda _: changed))
    prompts.load_prompt.cache_clear()
    try:
        second = _instruct(seeds, tmp_path / "second")
    finally:
        prompts.load_prompt.cache_clear()

    stages = second["by_stage"]
    fed = {"edit", "judge_edit"}  # the edit prompt, and the judge that reads the edit
    assert fed <= stages.keys() and len(stages) > len(fed)
    for stage, usage in stages.items():
        if stage in fed:
            assert usage["calls"] > 0 and usage["cache_hits"] == 0, (stage, usage)
        else:  # upstream of the edit: every call answered from the cache
            assert usage["calls"] == 0 and usage["cache_hits"] > 0, (stage, usage)
    assert len(any_schema_server.requests) - asked == second["total"]["calls"]
    assert second["total"]["cache_hits"] + second["total"]["calls"] == first["total"]["calls"]


def test_an_echoed_key_never_reaches_the_cache_store(fake_server: FakeOpenAIServer) -> None:
    key = "sk-test-fake-key-0000"  # the key `serve` configures
    fake_server.script({"content": f"your key is {key}"})
    with bound(Ledger()):
        invoke_text([("user", "what is my key?")])
    stored = b"".join(p.read_bytes() for p in get_settings().cache_path.parent.iterdir())  # + WAL
    assert key.encode() not in stored and b"your key is" in stored


def test_the_spend_is_on_disk_after_each_input_so_a_kill_cannot_hide_it(
    fake_server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNTHGRAPH_MAX_CONCURRENCY", "1")
    get_settings.cache_clear()
    fake_server.script({"content": "ok"})
    run = Run.open("spend", out=tmp_path / "run", config={})
    seen_on_disk: list[int] = []

    def process(item: str) -> list[dict[str, Any]]:
        manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
        seen_on_disk.append(manifest["usage"]["total"]["calls"])  # what a kill here would leave
        invoke_text([("user", item)])
        return [{"source_id": item}]

    run_batch(run, ["a", "b", "c"], process, item_id=str, output="out.jsonl", show_progress=False)
    run.finish()
    assert seen_on_disk == [0, 1, 2]


def test_chat_models_share_one_build_per_endpoint_and_other_fields_get_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYNTHGRAPH_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("SYNTHGRAPH_API_KEY", "sk-test-chat-model")
    get_settings.cache_clear()
    cold = get_chat_model("generator", temperature=0.1, max_tokens=16)
    warm = get_chat_model("generator", temperature=0.9, seed=3)
    # Per-call fields land on copies of one built model: its clients are shared.
    assert (cold.temperature, cold.max_tokens, warm.temperature, warm.seed) == (0.1, 16, 0.9, 3)
    assert cold.root_client is warm.root_client
    # Any other field builds a model of its own for the same endpoint.
    stopped = get_chat_model("generator", stop=["\n\n"])
    assert stopped.stop == ["\n\n"] and stopped.root_client is not cold.root_client
    assert stopped.openai_api_base == cold.openai_api_base == "http://127.0.0.1:9/v1"
    assert stopped.max_retries == 0 and stopped.http_client is cold.http_client
