"""The `aws` backend: SageMaker, S3, Lambda, IAM and Application Auto Scaling via boto3.

Clients come from `clients.py`; a botocore error is read with `client_errors.error_code()`; every
wait goes through `waiting.py`; the SageMaker tuning and training jobs share `sagemaker_job.py`.
"""
