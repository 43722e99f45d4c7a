"""Prefect tasks: thin wrappers over dogops' plain functions and the chosen backend."""
