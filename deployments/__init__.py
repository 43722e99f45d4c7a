"""Prefect deployments of the dogops flows: `serve.py` (no work pool, `make serve`) and
`prefect.yaml` (a process work pool, `prefect deploy --all`), with the same names and schedules."""
