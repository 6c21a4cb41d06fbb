"""One training loop for both the flat and the sequential model.

The loop only knows items (rows or entities) and a loss function over a batch of
item indices. It owns what both models share: the validation split, AdamW with a
plateau learning-rate schedule, early stopping that restores the best weights,
epoch and wall-clock limits, the progress callback and seeding. A data-parallel fit
(`synthgraph.tabular.ray_train`) runs this same loop in every worker, as one `Replica` each.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

ProgressCallback = Callable[[dict[str, Any]], None]
LossFunction = Callable[[np.ndarray, torch.Generator], torch.Tensor]

# The one default epoch limit (model, command, tool, graph); early stopping usually ends sooner.
DEFAULT_EPOCHS = 100


@dataclass
class TrainConfig:
    max_epochs: int = DEFAULT_EPOCHS
    max_minutes: float | None = None
    batch_size: int | None = None
    learning_rate: float = 3e-3
    weight_decay: float = 1e-5
    val_fraction: float = 0.1
    patience: int = 4
    seed: int | None = 0
    num_threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Replica:
    """This process's place in a data-parallel fit; the default is the only process.

    Every replica draws the same item order and batches; each trains on its strided share
    (`rank::size`) of every batch, so the global batch is a single process's. A data-parallel
    subclass averages gradients across replicas (`wrap`) and sums per-epoch figures (`total`),
    so every replica takes the same steps and stops at the same epoch.
    """

    rank: int = 0
    size: int = 1

    def wrap(self, module: nn.Module, loss_of: LossFunction) -> LossFunction:
        """The loss function whose backward pass yields this step's averaged gradients."""
        return loss_of

    def total(self, *values: float) -> list[float]:
        """Each value summed over the replicas."""
        return list(values)

    def anyone(self, flag: bool) -> bool:
        """Whether any replica raised `flag`."""
        return flag


def auto_batch_size(n_items: int, cap: int = 1024) -> int:
    """About 40 steps per epoch on small data, at most `cap` items per step."""
    return int(min(cap, max(16, 2 ** math.floor(math.log2(max(n_items // 40, 1))))))


def seed_everything(seed: int | None) -> np.random.Generator:
    if seed is not None:
        torch.manual_seed(seed)
    return np.random.default_rng(seed)


def train(
    module: nn.Module,
    n_items: int,
    loss_of: LossFunction,
    config: TrainConfig,
    progress: ProgressCallback | None = None,
    batch_cap: int = 1024,
    replica: Replica | None = None,
) -> dict[str, Any]:
    """Train `module` in place; return a summary (epochs, losses, stop reason)."""
    replica = replica or Replica()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    rng = seed_everything(config.seed)
    if replica.rank and config.seed is not None:
        torch.manual_seed(config.seed + replica.rank)  # own dropout masks, same item order
    started = time.monotonic()
    deadline = started + config.max_minutes * 60 if config.max_minutes else math.inf

    shuffled = rng.permutation(n_items)
    n_val = round(n_items * config.val_fraction) if n_items >= 10 else 0
    val_items, train_items = shuffled[:n_val], shuffled[n_val:]
    batch_size = config.batch_size or auto_batch_size(len(train_items), batch_cap)
    steps_per_epoch = max(1, math.ceil(len(train_items) / batch_size))

    optimizer = torch.optim.AdamW(
        module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
    order_generator = torch.Generator().manual_seed(int(rng.integers(2**31)) + replica.rank)
    val_seed = int(rng.integers(2**31)) + replica.rank
    step_loss = replica.wrap(module, loss_of)

    best_loss, best_state, best_epoch = math.inf, None, 0
    history: list[dict[str, float]] = []
    stop_reason = "max_epochs"
    epoch = 0
    for epoch in range(1, config.max_epochs + 1):
        module.train()
        epoch_items = rng.permutation(train_items)
        running = 0.0
        timed_out = False
        for step in range(steps_per_epoch):
            batch = epoch_items[step * batch_size : (step + 1) * batch_size]
            if len(batch) < replica.size:  # a replica without rows would stall the others
                continue
            loss = step_loss(batch[replica.rank :: replica.size], order_generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(module.parameters(), 5.0)
            optimizer.step()
            running += loss.item()
            report_step(progress, config, epoch, step, steps_per_epoch, running / (step + 1))
            if deadline < math.inf and replica.anyone(time.monotonic() > deadline):
                timed_out = True
                break
        (train_loss,) = replica.total(running / max(step + 1, 1))
        train_loss /= replica.size
        if n_val:
            share = val_items[replica.rank :: replica.size]
            total, count = replica.total(*_evaluate(module, share, batch_size, loss_of, val_seed))
            val_loss = total / max(count, 1)
        else:
            val_loss = train_loss
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        if progress is not None:
            progress(
                {
                    "epoch": epoch,
                    "max_epochs": config.max_epochs,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                }
            )
        scheduler.step(val_loss)
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = copy.deepcopy(module.state_dict())
        if timed_out:
            stop_reason = "max_minutes"
            break
        if epoch - best_epoch >= config.patience:
            stop_reason = "early_stopping"
            break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return {
        "epochs": epoch,
        "best_epoch": best_epoch,
        "best_val_loss": best_loss,
        "stop_reason": stop_reason,
        "batch_size": batch_size,
        "seconds": round(time.monotonic() - started, 2),
        "history": history,
    }


def report_step(
    progress: ProgressCallback | None,
    config: TrainConfig,
    epoch: int,
    step: int,
    steps_per_epoch: int,
    train_loss: float,
) -> None:
    """The progress event of one optimizer step (`step` counts from 0)."""
    if progress is not None:
        progress(
            {
                "epoch": epoch,
                "max_epochs": config.max_epochs,
                "step": step + 1,
                "steps_per_epoch": steps_per_epoch,
                "train_loss": train_loss,
            }
        )


@torch.no_grad()
def _evaluate(
    module: nn.Module, items: np.ndarray, batch_size: int, loss_of: LossFunction, seed: int
) -> tuple[float, int]:
    """Summed validation loss and its rows, with the same column orders every epoch, so
    epochs compare."""
    module.eval()
    generator = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        total += float(loss_of(batch, generator)) * len(batch)
        count += len(batch)
    return total, count
