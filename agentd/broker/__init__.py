"""Events between the parts of agentd: run output, the end of a run, cancel signals, wake-ups."""
