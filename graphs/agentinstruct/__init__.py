"""The agentinstruct feature: graph, job, command and tool."""
