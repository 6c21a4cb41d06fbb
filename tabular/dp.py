"""Differential privacy for flat TabularARGN models: a private value analysis, then DP-SGD.

`TabularARGN().fit(table, dp=DPConfig(epsilon=4))` spends the budget (ε, δ) in two parts, by
basic composition, and records what it spent in the model's metadata:

- `ANALYSIS_SHARE` (10%) of ε and δ goes to the value analysis, which would otherwise leak:
  every statistic the encoders keep comes from Laplace-noised counts (`CountNoise`), split
  evenly over the columns and, inside a column, over its histograms.
  * Categorical: a category is kept only if its noisy count passes
    `max(rare_min_count, 1 + ln(1/(2δ))/ε)`, the threshold under which a value seen once
    is kept with probability at most δ; the noisy counts are the rare-value weights. Whether
    the column has missing values is the noisy count of missing cells against the same
    threshold; the rare token is always allowed (its presence would leak).
  * Numeric: always quantile bins (the discrete and digit encodings would need the exact set
    of values). The bounds are the outermost powers of two (of each sign) whose noisy count
    passes a threshold; the decimals the most that enough rows need; the bin edges are
    quantiles of a noisy histogram of `GRID_CELLS` equal cells between the bounds, clipped at
    the `TAIL` quantiles. Tails thinner than the noise are clipped: with little data, many
    columns or a small ε, expect narrower ranges (`numeric.private_analysis`).
  * Datetime columns are refused: convert them to numbers, or leave them out.
- The rest trains the network with DP-SGD through Opacus: Poisson sampling, per-row
  gradients (torch.func) clipped to `max_grad_norm`, and a noise multiplier chosen by
  Opacus' PRV accountant so that the planned `max_epochs` spend exactly that ε. Training
  stops when the plan (and so the budget) is spent or at `max_minutes`.

Every row is covered: under DP no rows are held out for validation, because picking the epoch,
the learning rate or the best weights by losses that carry no noise (of held-out rows, or of
training batches) would make the model depend on rows the guarantee does not cover. The
network trains the planned epochs at a constant learning rate and keeps its last weights.
The number of rows is taken as public, as Opacus does: it sets the sampling rate.

Noise and sampling are drawn from generators seeded by the operating system, never by the
`seed` argument: a known seed would let anyone subtract the noise. (`seed` still fixes the
initial weights and column orders.) Opacus' `secure_mode` (torchcsprng) is not used.

Sequential models are refused: their LSTM has no per-entity gradients in Opacus without
rewriting it as Opacus' DPLSTM, and constraints are refused because they learn allowed
combinations from the data without noise.
"""

from __future__ import annotations

import math
import secrets
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from synthgraph.tabular.training import (
    ProgressCallback,
    TrainConfig,
    auto_batch_size,
    report_step,
    seed_everything,
)

ANALYSIS_SHARE = 0.1
"""Share of ε and δ spent on the value analysis; the rest goes to DP-SGD."""
DEFAULT_DELTA = 1e-5
DEFAULT_MAX_GRAD_NORM = 1.0
BATCH_CAP = 256
"""Per-row gradients of a whole batch are held at once: the cap bounds their memory."""
GRID_CELLS = 64
"""Cells of a numeric column's noisy histogram at most; fewer for fewer rows or a smaller ε
(about 4 noise scales of rows per cell), as fewer cells carry less noise into the quantiles."""
TAIL = 0.001
"""Quantiles below TAIL and above 1 - TAIL are clipped, like the non-private bounds."""
ACCOUNTANT = "prv"

Criterion = Callable[[list[torch.Tensor], torch.Tensor], torch.Tensor]
"""(the network's outputs for some rows, those rows) -> mean loss."""
RankDraw = Callable[[torch.Generator], torch.Tensor]
"""The column order of one batch."""


@dataclass(frozen=True)
class DPConfig:
    """The privacy budget (ε, δ) of a whole fit, and the per-row gradient clipping norm."""

    epsilon: float
    delta: float = DEFAULT_DELTA
    max_grad_norm: float = DEFAULT_MAX_GRAD_NORM

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError(f"dp epsilon must be positive, not {self.epsilon}")
        if not 0 < self.delta < 1:
            raise ValueError(f"dp delta must be between 0 and 1, not {self.delta}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"dp max_grad_norm must be positive, not {self.max_grad_norm}")

    def analysis_noise(self) -> CountNoise:
        """The value analysis' share of the budget, with noise the seed does not fix."""
        return CountNoise(
            self.epsilon * ANALYSIS_SHARE,
            self.delta * ANALYSIS_SHARE,
            np.random.default_rng(secrets.randbits(128)),
        )

    @property
    def training_epsilon(self) -> float:
        return self.epsilon * (1 - ANALYSIS_SHARE)

    @property
    def training_delta(self) -> float:
        return self.delta * (1 - ANALYSIS_SHARE)


@dataclass(frozen=True)
class CountNoise:
    """Laplace noise for histograms in which each row counts once (sensitivity 1)."""

    epsilon: float
    delta: float
    rng: np.random.Generator

    def split(self, parts: int) -> CountNoise:
        """An equal share for each of `parts` statistics of the same rows (they add up)."""
        return CountNoise(self.epsilon / parts, self.delta / parts, self.rng)

    def counts(self, counts: np.ndarray) -> np.ndarray:
        return np.asarray(counts, dtype=float) + self.rng.laplace(
            0.0, 1.0 / self.epsilon, np.shape(counts)
        )

    def threshold(self, rare_min_count: int) -> float:
        """For keys found in the data (categories): a count of one row passes with probability
        at most δ, so no single row's value is published; and at least `rare_min_count`."""
        return max(float(rare_min_count), 1.0 + math.log(1.0 / (2.0 * self.delta)) / self.epsilon)

    def bucket_threshold(self, n_buckets: int, spurious: float) -> float:
        """For buckets fixed before looking at the data (no δ needed): all `n_buckets` empty,
        the chance that any of them passes is at most `spurious`."""
        return math.log(n_buckets / (2.0 * spurious)) / self.epsilon

    def outermost(self, noisy: np.ndarray, threshold: float) -> tuple[int, int] | None:
        """The first and last bucket whose noisy count passes, if any does."""
        passing = np.flatnonzero(noisy >= threshold)
        return (int(passing[0]), int(passing[-1])) if len(passing) else None


def train_private(
    module: nn.Module,
    rows: torch.Tensor,
    criterion: Criterion,
    draw_rank: RankDraw,
    config: TrainConfig,
    dp: DPConfig,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """DP-SGD on every row of `rows` (codes) for `config.max_epochs`; returns a summary."""
    try:
        from opacus import PrivacyEngine
        from opacus.data_loader import DPDataLoader
    except ImportError as error:  # an optional extra
        raise RuntimeError(
            "differential privacy needs opacus: pip install 'synthgraph[dp]'"
        ) from error
    from torch.utils.data import DataLoader, TensorDataset

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    rng = seed_everything(config.seed)
    started = time.monotonic()
    deadline = started + config.max_minutes * 60 if config.max_minutes else math.inf
    batch_size = config.batch_size or auto_batch_size(len(rows), BATCH_CAP)
    secret = torch.Generator().manual_seed(secrets.randbits(63))
    loader = DPDataLoader.from_data_loader(
        DataLoader(TensorDataset(rows), batch_size=batch_size), generator=secret
    )
    optimizer = torch.optim.AdamW(
        module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant=ACCOUNTANT)
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        _, optimizer, loader = engine.make_private_with_epsilon(
            module=module,
            optimizer=optimizer,
            data_loader=loader,
            target_epsilon=dp.training_epsilon,
            target_delta=dp.training_delta,
            epochs=config.max_epochs,
            max_grad_norm=dp.max_grad_norm,
            poisson_sampling=False,  # the loader above already samples, with the secret generator
            noise_generator=secret,
            grad_sample_mode="no_op",  # per-row gradients come from torch.func below
        )

    def row_loss(
        params: dict[str, torch.Tensor], row: torch.Tensor, rank: torch.Tensor
    ) -> torch.Tensor:
        one = row[None]
        return criterion(torch.func.functional_call(module, params, (one, rank)), one)

    per_row = torch.func.vmap(
        torch.func.grad_and_value(row_loss), in_dims=(None, 0, None), randomness="different"
    )
    named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    order_generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    steps_per_epoch = len(loader)
    stop_reason, epoch, steps = "privacy_budget", 0, 0
    module.train()
    for epoch in range(1, config.max_epochs + 1):
        running, seen = 0.0, 0
        for step, (batch,) in enumerate(loader):
            if len(batch):
                grads, losses = per_row(
                    {name: p.detach() for name, p in named}, batch, draw_rank(order_generator)
                )
                running, seen = running + float(losses.sum()), seen + len(batch)
            else:  # an empty Poisson batch still takes a (pure noise) step: it is accounted
                grads = {name: p.new_zeros((0, *p.shape)) for name, p in named}
            for name, p in named:
                p.grad_sample = grads[name]  # type: ignore[attr-defined]  # what Opacus reads
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
            report_step(progress, config, epoch, step, steps_per_epoch, running / max(seen, 1))
            if time.monotonic() > deadline:
                stop_reason = "max_minutes"
                break
        if stop_reason == "max_minutes":
            break
    module.eval()
    spent = float(engine.get_epsilon(dp.training_delta)) if steps else 0.0
    # The loss history stays out of the summary: the summary is saved with the model, and
    # losses of training rows are not private.
    return {
        "epochs": epoch,
        "best_epoch": epoch,
        "best_val_loss": None,
        "stop_reason": stop_reason,
        "batch_size": batch_size,
        "seconds": round(time.monotonic() - started, 2),
        "history": [],
        "steps": steps,
        "sample_rate": 1 / steps_per_epoch,
        "noise_multiplier": float(optimizer.noise_multiplier),
        "epsilon": spent,
    }


def privacy_record(dp: DPConfig, training: dict[str, Any]) -> dict[str, Any]:
    """What a private fit spent, as saved in the model's metadata."""
    analysis = dp.epsilon * ANALYSIS_SHARE
    return {
        "epsilon": analysis + training["epsilon"],
        "delta": dp.delta,
        "target_epsilon": dp.epsilon,
        "max_grad_norm": dp.max_grad_norm,
        "noise_multiplier": training["noise_multiplier"],
        "value_analysis_epsilon": analysis,
        "training_epsilon": training["epsilon"],
        "steps": training["steps"],
        "sample_rate": training["sample_rate"],
        "accountant": ACCOUNTANT,
    }


def privacy_rows(record: dict[str, Any] | None) -> list[tuple[str, str]]:
    """A privacy record as (label, value) rows, for the printed and the HTML reports."""
    if record is None:
        return [("differential privacy", "none: the model was not trained privately")]
    return [
        ("differential privacy ε (spent)", f"{record['epsilon']:.3f}"),
        ("differential privacy δ", f"{record['delta']:.3g}"),
        ("DP-SGD noise multiplier", f"{record['noise_multiplier']:.3f}"),
        ("DP-SGD max gradient norm", f"{record['max_grad_norm']:.3g}"),
    ]
