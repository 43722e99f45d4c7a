"""Prefect flows: each reads as the DAG a person would draw. A flow turns its parameters into
settings, builds the backend once (`dogops.backends.get_backend`) and hands it to its tasks."""
