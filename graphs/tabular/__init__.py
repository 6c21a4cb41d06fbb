"""The tabular feature: graph, job, command and tool."""
