"""The personas feature: graph, job, command and tool."""
