"""The retrieval feature: graph, job, command and tool."""
