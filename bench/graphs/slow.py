"""Slow graph for the soak: one async node that sleeps 2 s, then echoes its input.

Long enough that a cancel sent once the run is `running` lands while it is still running,
however slow the server answers under load."""

from graphs.sleep import sleeping  # bench/ is on sys.path (langgraph.json dependencies)

graph = sleeping(2.0)
