"""The bucket steps: the artifact bucket exists, with the generated policy."""

from __future__ import annotations

import json
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError, ParamValidationError

from init.config import DEFAULT_REGION, InitConfig
from init.psqlscript import StepResult
from init.wait import until_deadline

_PERMANENT_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidBucketName",
    "AllAccessDisabled",
    "403",
}


def client(config: InitConfig, timeout: float) -> BaseClient:
    return boto3.client(
        "s3",
        endpoint_url=config.s3_endpoint,
        aws_access_key_id=config.s3_access_key,
        aws_secret_access_key=config.s3_secret_key,
        region_name=config.s3_region,
        config=Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            # One try per call: the backoff loop decides about retrying.
            retries={"total_max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path"},
        ),
    )


def wait_until_reachable(config: InitConfig, deadline: float) -> tuple[BaseClient, bool]:
    """A client, and whether the bucket exists, once the endpoint answers with valid credentials."""

    def attempt(seconds_left: float) -> tuple[BaseClient, bool]:
        # Each try's timeouts end at the deadline at the latest.
        s3 = client(config, timeout=max(0.5, min(5.0, seconds_left)))
        try:
            s3.head_bucket(Bucket=config.bucket)
        except ClientError as error:
            if _code(error) in ("404", "NoSuchBucket", "NotFound"):
                return s3, False
            raise
        return s3, True

    return until_deadline(attempt, deadline, _describe, _is_permanent)


def ensure_bucket(s3: BaseClient, config: InitConfig, exists: bool) -> StepResult:
    name = f"bucket {config.bucket}"
    if exists:
        return StepResult(name, "unchanged")
    # us-east-1 is S3's default location and must not be named; any other is.
    location = {} if config.s3_region == DEFAULT_REGION else {
        "CreateBucketConfiguration": {"LocationConstraint": config.s3_region}}
    try:
        s3.create_bucket(Bucket=config.bucket, **location)
    except ClientError as error:
        # Another init created it between our check and our create.
        if _code(error) in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return StepResult(name, "unchanged")
        raise
    return StepResult(name, "created")


def ensure_policy(s3: BaseClient, config: InitConfig) -> StepResult:
    name = f"bucket {config.bucket} policy"
    wanted = json.loads(config.policy_file.read_text(encoding="utf-8"))
    try:
        current = json.loads(s3.get_bucket_policy(Bucket=config.bucket)["Policy"])
    except ClientError as error:
        if _code(error) not in ("NoSuchBucketPolicy", "404"):
            raise
        current = None
    if current is not None and normalise(current) == normalise(wanted):
        return StepResult(name, "unchanged")
    s3.put_bucket_policy(Bucket=config.bucket, Policy=json.dumps(wanted))
    return StepResult(name, "updated")


def normalise(value: Any) -> Any:
    """Servers re-serialise policies: a single item may come back as a string."""
    if isinstance(value, dict):
        return {key: normalise(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        items = [normalise(item) for item in value]
        return sorted(items, key=json.dumps) if len(items) != 1 else items[0]
    return value


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _is_permanent(error: Exception) -> bool:
    if isinstance(error, (ParamValidationError, ValueError)):  # ValueError: a malformed endpoint URL
        return True
    return isinstance(error, ClientError) and _code(error) in _PERMANENT_CODES


def _describe(error: Exception) -> str:
    if isinstance(error, ClientError):
        code = _code(error)
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return (f"access denied ({code}); check S3_ACCESS_KEY and S3_SECRET_KEY, or without them "
                    "MINIO_ROOT_USER and MINIO_ROOT_PASSWORD")
        return f"{code}: {error.response.get('Error', {}).get('Message', '')}".strip()
    return str(error).splitlines()[0] if str(error) else type(error).__name__
