"""Crons: schedules that queue normal runs, and the scheduler that fires them."""
