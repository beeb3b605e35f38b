"""Runnable benchmarks that print figures (see each module's docstring; `bench/run_all.py` runs them all)."""
