"""out/minio/policies/<bucket>.json: the artifact bucket's policy.

On MinIO a bucket policy is consulted only for anonymous requests, and the
root user bypasses policies: the statement below names one identity, never
"*", so it can make nothing public. S3 servers that evaluate principals (AWS,
SeaweedFS) read it as the grant MLflow's identity needs. Applying it on
every init also replaces any earlier policy that made the bucket public.
An external S3 (MINIO_ENABLED not true, S3_ENDPOINT elsewhere) gets no
policy file: that bucket's policy belongs to the service's operator.
"""

from __future__ import annotations

from generator.render import to_json
from generator.settings import Settings

BUCKET_ACTIONS = ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"]
OBJECT_ACTIONS = [
    "s3:AbortMultipartUpload",
    "s3:DeleteObject",
    "s3:GetObject",
    "s3:ListMultipartUploadParts",
    "s3:PutObject",
]


def path(settings: Settings) -> str:
    return f"minio/policies/{settings.storage.bucket}.json"


def policy(settings: Settings) -> dict:
    bucket = settings.storage.bucket
    access_key, _secret_variable, _secret = settings.s3_credentials
    principal = {"AWS": [f"arn:aws:iam:::user/{access_key}"]}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "MlflowListBucket",
                "Effect": "Allow",
                "Principal": principal,
                "Action": BUCKET_ACTIONS,
                "Resource": [f"arn:aws:s3:::{bucket}"],
            },
            {
                "Sid": "MlflowReadWriteArtifacts",
                "Effect": "Allow",
                "Principal": principal,
                "Action": OBJECT_ACTIONS,
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
            },
        ],
    }


def build(settings: Settings) -> dict[str, bytes]:
    if settings.external_s3:
        # Another service's bucket: its operator grants MLflow's key access,
        # and replacing their policy could revoke other users' grants.
        return {}
    return {path(settings): to_json(policy(settings))}
