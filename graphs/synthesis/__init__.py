"""The synthesis feature: graph, job, command and tool."""
