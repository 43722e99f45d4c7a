"""SageMaker entry-point code: training (`train.py`) and serving (`inference.py`).

Self-contained on purpose: SageMaker copies this folder into its containers, so nothing here
imports `dogops`, `flows` or `tasks`.
"""
