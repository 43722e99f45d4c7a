"""The project's S3 bucket: made to exist (only when asked) and to stay private (default
encryption and a public access block), before the data sync writes to it.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from dogops.aws.client_errors import error_code
from dogops.aws.clients import AwsClients
from dogops.errors import UserInputError


def ensure_bucket(clients: AwsClients, bucket: str, *, create: bool) -> bool:
    """Make sure `bucket` exists and is ours; returns True when this call created it.

    With `create`, a bucket lacking default encryption or a public access block gets them
    (so a crash between CreateBucket and those calls is repaired by the re-run); settings a
    bucket already has are left alone.
    """
    s3 = clients.client("s3")
    created = False
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = error_code(exc)
        if code in ("403", "AccessDenied", "Forbidden"):
            raise UserInputError(
                f"S3 bucket {bucket!r} exists but these credentials cannot use it (403): pick "
                "another aws.bucket, or grant access to it."
            ) from exc
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise
        if not create:
            raise UserInputError(
                f"S3 bucket {bucket!r} does not exist: create it, or set "
                "aws.create_bucket=true (DOGOPS_AWS__CREATE_BUCKET=true) to let dogops create it."
            ) from exc
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if clients.config.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": clients.config.region}
        try:
            s3.create_bucket(**kwargs)
            created = True
        except ClientError as create_exc:
            create_code = error_code(create_exc)
            if create_code == "BucketAlreadyExists":
                raise UserInputError(
                    f"S3 bucket name {bucket!r} is taken by another account: bucket names are "
                    "global, choose another aws.bucket."
                ) from create_exc
            if create_code == "InvalidBucketName":
                raise UserInputError(
                    f"{bucket!r} is not a valid S3 bucket name: use 3-63 lowercase letters, "
                    "digits, dots or hyphens (aws.bucket)."
                ) from create_exc
            if create_code != "BucketAlreadyOwnedByYou":
                raise
    if create:
        _ensure_bucket_protection(s3, bucket)
    return created


def _ensure_bucket_protection(s3: Any, bucket: str) -> None:
    try:
        s3.get_bucket_encryption(Bucket=bucket)
    except ClientError as exc:
        if error_code(exc) != (
            "ServerSideEncryptionConfigurationNotFoundError"
        ):
            raise
        s3.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )
    try:
        s3.get_public_access_block(Bucket=bucket)
    except ClientError as exc:
        if error_code(exc) != "NoSuchPublicAccessBlockConfiguration":
            raise
        s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
