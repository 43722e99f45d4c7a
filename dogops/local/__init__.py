"""The `local` backend: the same pipeline on this machine, no AWS account: a folder as the object
store, an Optuna tuner whose trials the SageMaker training toolkit starts, and an HTTP endpoint
(`endpoint_server/`) that serves `inference.py` through the SageMaker serving toolkits."""
