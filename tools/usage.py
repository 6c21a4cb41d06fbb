"""What a run spends: tokens, cost and cache hits per role, model and stage, and its caps.

Each run owns one `Ledger` (`Run.ledger`), saved in its manifest under `usage` and carried on
by `--resume`, so a cap counts every attempt. The executor binds the run's ledger to the
thread that processes an input (`bound`); every LLM call made there is recorded by
`agents/llm.py` through `current_ledger()`, and LangGraph copies the binding into its nodes.

Prices are USD per million tokens. The defaults are list prices of common OpenAI models;
`SYNTHGRAPH_PRICES_FILE` (JSON `{"model": {"input": 0.15, "output": 0.6}}`) adds or overrides
them. A model not in the table (the embedded one, too) shows its tokens at $0.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# USD per 1M tokens (input, output), OpenAI list prices.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
}


BATCH_PRICE = 0.5
"""Share of the list price a Batch API request costs (OpenAI bills batches at half price)."""


def load_prices(path: Path | None) -> dict[str, tuple[float, float]]:
    """The default price table, with the entries of `path` added or overriding."""
    prices = dict(DEFAULT_PRICES)
    if path is None:
        return prices
    from synthgraph.tools.io import InputError, reading  # pandas: only when a table is given

    with reading(path):  # bad bytes, bad JSON, no file: one line naming it
        table = json.loads(path.read_text("utf-8"))
    try:
        for model, price in table.items():
            prices[str(model)] = (float(price["input"]), float(price["output"]))
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise InputError(
            f"{path}: not a price table ({error}); expected "
            '{"model": {"input": USD per 1M tokens, "output": USD per 1M tokens}}'
        ) from error
    return prices


def price_of(model: str, prices: Mapping[str, tuple[float, float]]) -> tuple[float, float]:
    """(input, output) USD per 1M tokens; a dated name (`gpt-4o-mini-2024-07-18`) takes its
    base model's price, the longest name that prefixes it. Unknown: free."""
    if model in prices:
        return prices[model]
    matches = [name for name in prices if model.startswith(f"{name}-")]
    return prices[max(matches, key=len)] if matches else (0.0, 0.0)


@dataclass
class Usage:
    calls: int = 0
    """Requests answered by the endpoint."""
    cache_hits: int = 0
    """Requests answered from the response cache (no tokens spent)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> None:
        self.calls += other.calls
        self.cache_hits += other.cache_hits
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd


@dataclass
class Caps:
    max_cost: float | None = None
    """USD per run, over all its attempts."""
    max_tokens: int | None = None
    """Prompt plus completion tokens per run, over all its attempts."""


@dataclass(frozen=True)
class Budget:
    """A command's spending options. Not part of what a run makes: `--resume` may change them
    (a higher cap goes on where the last attempt stopped). None: the settings' value."""

    max_cost: float | None = None
    max_total_tokens: int | None = None
    cache: bool | None = None
    batch: bool = False
    """Send requests through the endpoint's Batch API (`agents/batch_api.py`)."""
    executor: str | None = None
    """`thread` or `async` for this attempt (`graphs/batch.py`); None: the settings' value."""


@dataclass
class Ledger:
    """One run's spending. Thread-safe: the executor's workers record into it at once."""

    prices: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    caps: Caps = field(default_factory=Caps)
    cache: bool | None = None
    """Use the response cache: None follows the settings (on for remote endpoints)."""
    batch: bool = False
    """This attempt sends its requests through the Batch API."""
    executor: str | None = None
    """This attempt's executor; None: the settings' value."""
    rows: dict[tuple[str, str, str], Usage] = field(default_factory=dict)
    """(role, model, stage) → usage, earlier attempts included."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _samples: dict[str, int] = field(default_factory=dict, repr=False)

    def apply(self, budget: Budget) -> None:
        """This attempt's options: a cap given overrides the settings' one."""
        if budget.max_cost is not None:
            self.caps.max_cost = budget.max_cost
        if budget.max_total_tokens is not None:
            self.caps.max_tokens = budget.max_total_tokens
        if budget.cache is not None:
            self.cache = budget.cache
        self.batch = budget.batch
        self.executor = budget.executor

    # --- recording -------------------------------------------------------------
    def record(
        self,
        role: str,
        model: str,
        stage: str,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cached: bool = False,
    ) -> None:
        """One reply. A cached reply counts as a hit and spends nothing."""
        if cached:
            spent = Usage(cache_hits=1)
        else:
            price_in, price_out = price_of(model, self.prices)
            cost = (prompt_tokens * price_in + completion_tokens * price_out) / 1_000_000
            cost *= BATCH_PRICE if self.batch else 1.0
            spent = Usage(1, 0, prompt_tokens, completion_tokens, cost)
        with self._lock:
            self.rows.setdefault((role, model, stage), Usage()).add(spent)

    def next_sample(self, request_key: str) -> int:
        """How many times this run has already asked exactly this (for one input): the k-th
        identical request is sample k, so k samples at temperature > 0 stay k replies."""
        with self._lock:
            index = self._samples.get(request_key, 0)
            self._samples[request_key] = index + 1
            return index

    # --- reading ---------------------------------------------------------------
    def total(self) -> Usage:
        with self._lock:
            total = Usage()
            for usage in self.rows.values():
                total.add(usage)
            return total

    def by(self, key: str) -> dict[str, Usage]:
        """Usage summed per `role`, `model` or `stage`."""
        position = ("role", "model", "stage").index(key)
        with self._lock:
            grouped: dict[str, Usage] = {}
            for row, usage in self.rows.items():
                grouped.setdefault(row[position], Usage()).add(usage)
            return grouped

    def over_cap(self, next_cost: float = 0.0, next_tokens: int = 0) -> str | None:
        """Why one more input of about this cost would cross a cap, or None."""
        total = self.total()
        caps = self.caps
        if caps.max_cost is not None and total.cost_usd + next_cost > caps.max_cost:
            return f"--max-cost ${caps.max_cost:g} (spent ${total.cost_usd:.4f})"
        if caps.max_tokens is not None and total.tokens + next_tokens > caps.max_tokens:
            return f"--max-total-tokens {caps.max_tokens:,} (spent {total.tokens:,})"
        return None

    # --- the manifest's `usage` ---------------------------------------------
    def to_manifest(self) -> dict[str, Any]:
        def rounded(usage: Usage) -> dict[str, Any]:
            return {**asdict(usage), "cost_usd": round(usage.cost_usd, 6)}

        total = self.total()
        with self._lock:
            rows = [
                {"role": role, "model": model, "stage": stage, **rounded(usage)}
                for (role, model, stage), usage in sorted(self.rows.items())
            ]
        return {
            "total": {**rounded(total), "tokens": total.tokens},
            "by_role": {name: rounded(u) for name, u in sorted(self.by("role").items())},
            "by_stage": {name: rounded(u) for name, u in sorted(self.by("stage").items())},
            "rows": rows,
            "caps": asdict(self.caps),
        }

    @classmethod
    def from_manifest(cls, usage: Mapping[str, Any] | None, **kwargs: Any) -> Ledger:
        """The ledger of a run's earlier attempts, to go on counting."""
        ledger = cls(**kwargs)
        fields = ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "cost_usd")
        for row in (usage or {}).get("rows", []):
            key = (str(row["role"]), str(row["model"]), str(row["stage"]))
            ledger.rows[key] = Usage(*(row.get(name, 0) for name in fields))
        return ledger


_current: ContextVar[tuple[Ledger, str] | None] = ContextVar("synthgraph_ledger", default=None)


def current_ledger() -> Ledger | None:
    """The ledger of the run this thread works for, if any."""
    bound_to = _current.get()
    return bound_to[0] if bound_to else None


def current_input() -> str:
    """The id of the input this thread works on ('' outside the executor)."""
    bound_to = _current.get()
    return bound_to[1] if bound_to else ""


@contextmanager
def bound(ledger: Ledger, input_id: str = "") -> Iterator[Ledger]:
    """Record this thread's LLM calls (and LangGraph nodes it starts) in `ledger`, for the
    input `input_id`."""
    token = _current.set((ledger, input_id))
    try:
        yield ledger
    finally:
        _current.reset(token)
