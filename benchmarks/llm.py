"""Benchmark of the embedded LLM server: llama_cpp.server against llama.cpp's llama-server.

Both serve the same GGUF in one run, one after the other, on loopback with the
same threads:
- llama_cpp.server (llama-cpp-python, the `bench` extra; skipped if not installed),
  one request at a time, log-probs computed in Python;
- llama-server (the embedded default), `--slots` requests decoded at once.

Throughput: at each level of requests in flight (1/2/4/8), `--rounds` × level
chat completions of up to `--tokens` tokens, each with its own prompt;
aggregate decode rate = completion tokens / wall seconds, and requests/s; with
and without log-probs (`logprobs: true, top_logprobs: 1`, as `retrieval generate`
asks). End to end: `synthgraph personas` on `--texts` texts (sentences of
examples/texts, a seeded draw), greedy, no expansion rounds, through the
embedded path on each server (the server is registered, so the CLI reuses it):
wall time and personas per minute.

    python benchmarks/llm.py                          # everything (llama_cpp.server with log-probs takes ~15 min)
    python benchmarks/llm.py --quick                  # 1 and 4 in flight, 16 tokens, 6 texts
    python benchmarks/llm.py --servers llama-server --skip-e2e
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["parse a CSV file", "write a binary search", "serve files over HTTP", "merge two sorted lists",
         "count words in a text", "validate an email address", "retry a failing network call",
         "build a command-line tool", "cache function results", "read a JSON config", "sort a dictionary",
         "walk a directory tree", "schedule a periodic job", "compress a folder", "hash a password",
         "test a small function"]  # fmt: skip


# --- servers ---------------------------------------------------------------------------


def server_command(
    kind: str, model: Path, port: int, slots: int, ctx: int, threads: int
) -> list[str]:
    if kind == "llama-server":
        from synthgraph.agents.llama_build import llama_server_binary
        from synthgraph.agents.local_model import LocalServer
        from synthgraph.tools.settings import get_settings

        settings = get_settings().model_copy(
            update={"local_slots": slots, "local_ctx": ctx, "local_threads": threads}
        )
        return LocalServer(model, settings, port).command(llama_server_binary(settings))
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
            "--model_alias", model.stem, "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", str(ctx), "--n_threads", str(threads)]  # fmt: skip


class Server:
    """One server process for the benchmark's lifetime (not the shared embedded one)."""

    def __init__(self, kind: str, model: Path, args: argparse.Namespace, log_dir: Path) -> None:
        from synthgraph.agents.local_model import free_port, server_environment

        self.kind = kind
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.slots = (args.slots or max(args.in_flight)) if kind == "llama-server" else 1
        command = server_command(kind, model, self.port, self.slots, args.ctx, args.threads)
        self.log = log_dir / f"{kind}.log"
        started = time.monotonic()
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=server_environment()
            )
        while not self._ready():
            if self.process.poll() is not None:
                raise SystemExit(
                    f"{kind} exited with code {self.process.returncode}; see {self.log}"
                )
            if time.monotonic() - started > 300:
                self.stop()
                raise SystemExit(f"{kind} did not start within 300 s; see {self.log}")
            time.sleep(0.5)
        self.startup_seconds = time.monotonic() - started

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/models", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        from synthgraph.agents.llama_registry import stop_process

        stop_process(self.process)


# --- throughput -----------------------------------------------------------------------


def one_request(base_url: str, index: int, tokens: int, logprobs: bool) -> tuple[int, bool]:
    """(completion tokens, whether the reply carried log-probs) for one chat completion."""
    body: dict[str, Any] = {
        "model": "bench",
        "messages": [
            {
                "role": "user",
                "content": f"Explain step by step, with Python code, how to {TASKS[index % len(TASKS)]} (variant {index}).",
            }
        ],
        "max_tokens": tokens,
        "temperature": 0.7,
        "seed": index,
    }
    if logprobs:
        body.update(logprobs=True, top_logprobs=1)
    reply = httpx.post(f"{base_url}/chat/completions", json=body, timeout=3600).json()
    carried = bool((reply["choices"][0].get("logprobs") or {}).get("content"))
    return int(reply["usage"]["completion_tokens"]), carried


def throughput(
    server: Server, in_flight: int, args: argparse.Namespace, logprobs: bool
) -> dict[str, Any]:
    count = in_flight * args.rounds
    started = time.monotonic()
    with ThreadPoolExecutor(in_flight) as pool:
        results = list(
            pool.map(lambda i: one_request(server.base_url, i, args.tokens, logprobs), range(count))
        )
    seconds = time.monotonic() - started
    tokens = sum(r[0] for r in results)
    return {
        "server": server.kind, "in_flight": in_flight, "logprobs": logprobs, "requests": count,
        "tokens": tokens, "seconds": round(seconds, 2), "tok_s": round(tokens / seconds, 1),
        "req_s": round(count / seconds, 3), "logprobs_returned": all(r[1] for r in results),
    }  # fmt: skip


# --- end to end: synthgraph personas ---------------------------------------------------------


def e2e_texts(count: int, seed: int, target: Path) -> Path:
    """`count` distinct texts: single sentences and sentence pairs of examples/texts, seeded."""
    texts: list[str] = []
    for path in sorted((ROOT / "examples" / "texts").glob("*.txt")):
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", path.read_text().strip()) if s]
        texts += sentences + [" ".join(pair) for pair in itertools.pairwise(sentences)]
    chosen = random.Random(seed).sample(texts, min(count, len(texts)))
    target.write_text("".join(json.dumps({"text": t}) + "\n" for t in chosen))
    return target


def register(server: Server, model: Path, cache_dir: Path) -> None:
    """Record the benchmark's server in a registry of its own, so the CLI's embedded path reuses it."""
    from synthgraph.agents.llama_registry import start_time, write_registry
    from synthgraph.agents.local_model import model_identity

    entry = {
        "base_url": server.base_url, "alias": model.stem, "dir": str(cache_dir / "servers" / "bench"),
        "pid": server.process.pid, "pid_started": start_time(server.process.pid),
        "supervisor_pid": os.getpid(), "supervisor_started": start_time(os.getpid()),
        **model_identity(model),
    }  # fmt: skip
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_registry(cache_dir / "server.json", {str(model.resolve()): entry})


def personas_e2e(
    server: Server, model: Path, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    cache_dir = work / f"cache-{server.kind}"
    register(server, model, cache_dir)
    texts = e2e_texts(args.texts, args.seed, work / "texts.jsonl")
    out = work / f"personas-{server.kind}"
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"SYNTHGRAPH_BASE_URL", "OPENAI_BASE_URL"}},
        "SYNTHGRAPH_CACHE_DIR": str(cache_dir), "SYNTHGRAPH_LOCAL_MODEL": str(model),
        "SYNTHGRAPH_DATA_DIR": str(work / f"data-{server.kind}"),
        "SYNTHGRAPH_MAX_CONCURRENCY": str(server.slots), "SYNTHGRAPH_TIMEOUT": "1800",
        # llama_cpp.server rejects json_schema; llama-server turns it into a grammar.
        "SYNTHGRAPH_STRUCTURED_METHOD": "json_schema" if server.kind == "llama-server" else "json_mode",
    }  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "synthgraph.graphs.cli", "--log-level", "WARNING", "personas",
         str(texts), "--out", str(out), "--expand-rounds", "0", "--temperature", "0"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"personas on {server.kind} failed:\n{result.stderr[-3000:]}")
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    return {
        "server": server.kind, "texts": args.texts, "seconds": round(seconds, 1),
        "counts": counts, "personas_per_min": round(counts.get("generated", 0) / seconds * 60, 1),
    }  # fmt: skip


# --- the run ----------------------------------------------------------------------------


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="a GGUF (default: the embedded model)")
    parser.add_argument("--servers", default="llama_cpp.server,llama-server")
    parser.add_argument(
        "--in-flight", default="1,2,4,8", type=lambda v: [int(x) for x in v.split(",")]
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="requests per level = rounds × in flight"
    )
    parser.add_argument(
        "--slots", type=int, help="llama-server slots (default: the most in flight)"
    )
    parser.add_argument("--tokens", type=int, default=128, help="max tokens per reply")
    parser.add_argument("--ctx", type=int, default=2048, help="context per slot")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--texts", type=int, default=40, help="texts for the personas run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--skip-logprobs", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="1 and 4 in flight, 16 tokens, 6 texts"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "llm")
    args = parser.parse_args()
    if args.quick:
        args.in_flight, args.rounds, args.tokens, args.texts = [1, 4], 1, 16, 6

    from synthgraph.agents.local_model import resolve_model_path

    model = (args.model or resolve_model_path()).resolve()
    kinds = [k for k in args.servers.split(",") if k]
    if "llama_cpp.server" in kinds and find_spec("llama_cpp") is None:
        print("llama-cpp-python is not installed (the `bench` extra): skipping llama_cpp.server")
        kinds.remove("llama_cpp.server")
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "model": str(model),
        "threads": args.threads,
        "throughput": [],
        "e2e": [],
    }
    with tempfile.TemporaryDirectory(prefix="synthgraph-llm-bench-") as tmp:
        for kind in kinds:
            server = Server(kind, model, args, args.out)
            print(
                f"{kind}: ready in {server.startup_seconds:.1f} s, {server.slots} slot(s)",
                flush=True,
            )
            try:
                one_request(server.base_url, 0, 8, False)  # warm-up
                for logprobs in [False] if args.skip_logprobs else [False, True]:
                    for level in [] if args.skip_throughput else args.in_flight:
                        row = throughput(server, level, args, logprobs)
                        report["throughput"].append(row)
                        print(json.dumps(row), flush=True)
                if not args.skip_e2e:
                    row = personas_e2e(server, model, args, Path(tmp))
                    report["e2e"].append(row)
                    print(json.dumps(row), flush=True)
            finally:
                server.stop()
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    columns = [
        "server",
        "logprobs",
        "in_flight",
        "requests",
        "tokens",
        "seconds",
        "tok_s",
        "req_s",
        "logprobs_returned",
    ]
    print("\n" + table(report["throughput"], columns))
    if report["e2e"]:
        rows = [{**r, "generated": r["counts"].get("generated"), "kept": r["counts"].get("kept"),
                 "rejects": r["counts"].get("rejects")} for r in report["e2e"]]  # fmt: skip
        print(
            "\n"
            + table(
                rows,
                ["server", "texts", "seconds", "generated", "kept", "rejects", "personas_per_min"],
            )
        )
    print(f"\nreport: {args.out / 'report.json'}")


if __name__ == "__main__":
    main()
