"""TabularARGN: synthetic tables from an any-order autoregressive network (arXiv 2501.12012).

Only torch, numpy, pandas and safetensors are used here (and opacus for a DP fit); the jobs, command, tools
and graph that use this package live in `synthgraph.graphs.tabular`.
"""

from synthgraph.tabular.argn import TabularARGN
from synthgraph.tabular.quality import quality_report

__all__ = ["TabularARGN", "quality_report"]
