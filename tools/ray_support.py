"""Joining Ray: the one place every Ray user (dedup, the Ray executor, Ray Train) starts it."""

from __future__ import annotations

import logging

import ray
import ray.data


def init_ray(address: str | None = None) -> None:
    """Connect to the Ray cluster at `address` (else SYNTHGRAPH_RAY_ADDRESS); without
    one, start Ray on this machine. Keeps a Ray that is already initialised."""
    # Our Ray Data jobs are short: their progress bars and INFO lines are noise.
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if ray.is_initialized():
        return
    if address is None:
        from synthgraph.tools.settings import get_settings

        address = get_settings().ray_address
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(include_dashboard=False, log_to_driver=False)
