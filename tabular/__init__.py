"""TabularARGN: synthetic tables from an any-order autoregressive network (arXiv 2501.12012).

Only torch, numpy, pandas and safetensors are used here; LangChain tools that
wrap this package live in `synthgraph.tools.tabular_tools`.
"""

from synthgraph.tabular.argn import TabularARGN
from synthgraph.tabular.quality import quality_report

__all__ = ["TabularARGN", "quality_report"]
