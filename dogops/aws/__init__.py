"""The `aws` backend: SageMaker, S3, Lambda, IAM and Application Auto Scaling via boto3."""
