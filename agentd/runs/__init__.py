"""The run lifecycle: create, claim, execute, stream, finish."""
