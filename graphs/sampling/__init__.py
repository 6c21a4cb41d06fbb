"""The sampling feature: graph, job, command and tool."""
