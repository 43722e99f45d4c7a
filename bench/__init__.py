"""Benchmarks of dogops against real peers; `python -m bench.run_all` runs them all."""
