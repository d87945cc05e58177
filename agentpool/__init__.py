"""agentpool: docker-in-docker Jenkins agents on demand."""

__version__ = "0.1.0"
