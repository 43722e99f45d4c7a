"""Prefect flows: each reads as the DAG a person would draw."""
