"""Data-parallel training on Ray Train: torch DDP over gloo, on CPU workers.

`TabularARGN.fit(..., executor="ray", workers=N)` comes here. The value analysis and the
encoding stay on the driver; the network and its loss function (which holds the encoded
codes) go to the object store once, and each of the `N` workers runs the one training loop
(`synthgraph.tabular.training.train`) as a `Replica`: the same item order on every worker,
each training on its share of every batch (so the global batch, and with it the accuracy at
equal epochs, is a single process's), gradients averaged by DDP, training and validation
losses summed across workers so that all of them step the schedule and stop together. Rank 0
sends progress events and, at the end, its best weights back through a queue; the driver
loads them into its own network.

Ray is started with `SYNTHGRAPH_RAY_ADDRESS` (else on this machine) unless the caller has
initialised it already. Each worker takes one CPU; `num_threads` still sets its torch threads.
"""

from __future__ import annotations

import os
import random
import tempfile
import threading
import time
from dataclasses import replace
from typing import Any

import numpy as np
import ray
import torch
import torch.distributed as dist
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.util.queue import Empty, Queue
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from synthgraph.tabular.training import LossFunction, ProgressCallback, Replica, TrainConfig, train

POLL_SECONDS = 0.2


class _LossModule(nn.Module):
    """The network with its loss as `forward`: DDP syncs gradients of what its forward ran."""

    def __init__(self, module: nn.Module, loss_of: LossFunction) -> None:
        super().__init__()
        self.module = module
        self.loss_of = loss_of

    def forward(self, batch: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        return self.loss_of(batch, generator)


class _DDPReplica(Replica):
    def __init__(self, rank: int, size: int) -> None:
        self.rank, self.size = rank, size

    def wrap(self, module: nn.Module, loss_of: LossFunction) -> LossFunction:
        # `loss_of` calls `module` itself, which is the wrapped one: both came in one pickle.
        return DistributedDataParallel(_LossModule(module, loss_of))

    def total(self, *values: float) -> list[float]:
        summed = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(summed)
        return summed.tolist()

    def anyone(self, flag: bool) -> bool:
        raised = torch.tensor([int(flag)])
        dist.all_reduce(raised, op=dist.ReduceOp.MAX)
        return bool(raised.item())


def train_on_ray(
    module: nn.Module,
    n_items: int,
    loss_of: LossFunction,
    config: TrainConfig,
    workers: int,
    progress: ProgressCallback | None = None,
    batch_cap: int = 1024,
) -> dict[str, Any]:
    """`train`, on `workers` Ray Train workers; `module` ends with the best weights."""
    if not ray.is_initialized():
        ray.init(address=os.environ.get("SYNTHGRAPH_RAY_ADDRESS"), log_to_driver=False)
    if config.seed is None:  # every worker must draw the same item order
        config = replace(config, seed=random.randrange(2**31))
    queue = Queue()
    received: dict[str, Any] = {}
    done = threading.Event()
    # The trainer runs in this thread (Ray Train wants the main one); events arrive beside it.
    listener = threading.Thread(target=_listen, args=(queue, progress, received, done))
    listener.start()
    try:
        with tempfile.TemporaryDirectory(prefix="synthgraph-ray-train-") as storage:
            TorchTrainer(
                _worker_loop,
                train_loop_config={
                    "payload": ray.put((module, loss_of)),
                    "n_items": n_items,
                    "config": config,
                    "batch_cap": batch_cap,
                    "queue": queue,
                    "progress": progress is not None,
                },
                torch_config=TorchConfig(backend="gloo"),
                scaling_config=ScalingConfig(num_workers=workers, use_gpu=False),
                run_config=RunConfig(storage_path=storage, name="tabular-fit"),
            ).fit()
    finally:
        done.set()
        listener.join()
        ray.kill(queue.actor)
    if "state" not in received:
        raise RuntimeError("the Ray Train workers ended without returning weights")
    module.load_state_dict(received["state"])
    module.eval()
    return {**received["summary"], "workers": workers}


def _listen(
    queue: Queue, progress: ProgressCallback | None, received: dict[str, Any], done: threading.Event
) -> None:
    """Hand rank 0's events to `progress` and keep its result, until `done` and drained."""
    while True:
        try:
            kind, payload = queue.get(timeout=POLL_SECONDS)
        except Empty:
            if done.is_set():
                return
            continue
        if kind == "progress" and progress is not None:
            progress(payload)
        elif kind == "result":
            received.update(payload)


def _worker_loop(loop_config: dict[str, Any]) -> None:
    context = ray.train.get_context()
    rank, size = context.get_world_rank(), context.get_world_size()
    module, loss_of = ray.get(loop_config["payload"])
    queue: Queue = loop_config["queue"]
    config: TrainConfig = loop_config["config"]
    if not config.num_threads:
        # Ray pins a worker to its one CPU with OMP_NUM_THREADS; torch may not have read it.
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    report = None
    if rank == 0 and loop_config["progress"]:
        last_step = 0.0

        def report(event: dict[str, Any]) -> None:
            # Each put is a call to the queue's actor: step events at most every POLL_SECONDS.
            nonlocal last_step
            if "step" in event:
                if time.monotonic() - last_step < POLL_SECONDS:
                    return
                last_step = time.monotonic()
            queue.put(("progress", event))

    summary = train(
        module,
        loop_config["n_items"],
        loss_of,
        config,
        report,
        loop_config["batch_cap"],
        replica=_DDPReplica(rank, size),
    )
    if rank == 0:
        state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        queue.put(("result", {"state": state, "summary": summary}))
