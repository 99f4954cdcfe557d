"""agentd: a self-hosted, wire-compatible server for LangGraph agents."""

__version__ = "0.1.0"
