"""Prefect tasks: thin wrappers over dogops' plain functions and the flow run's backend, which
the flow builds once (`dogops.backends.get_backend`) and passes as their first argument."""
