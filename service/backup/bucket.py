"""The artifact bucket, read and written through boto3 (imported only when a bucket is used)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from service.backup.errors import BackupError


@dataclass(frozen=True)
class Bucket:
    """The artifact bucket, through boto3."""

    client: Any
    name: str
    endpoint: str

    def _call(self, what: str, function, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return function(**kwargs)
        except (ClientError, BotoCoreError) as error:
            raise self._failure(what, error) from None

    def _failure(self, what: str, error: Exception) -> BackupError:
        from botocore.exceptions import ClientError

        if isinstance(error, ClientError):
            code = error.response.get("Error", {}).get("Code", "error")
            hint = "; check MINIO_ROOT_USER and MINIO_ROOT_PASSWORD" if code in (
                "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch") else ""
            return BackupError(f"S3 at {self.endpoint}: {what} failed: {code}{hint}")
        return BackupError(f"S3 at {self.endpoint}: {what} failed: {error}; is MinIO up and "
                           "its port published (pass --s3-endpoint)?")

    def objects(self) -> Iterator[dict]:
        token = None
        while True:
            page = self._call(f"listing bucket {self.name}", self.client.list_objects_v2, Bucket=self.name,
                              **({"ContinuationToken": token} if token else {}))
            yield from page.get("Contents", [])
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def is_empty(self) -> bool:
        page = self._call(f"listing bucket {self.name}", self.client.list_objects_v2, Bucket=self.name, MaxKeys=1)
        return not page.get("Contents")

    def open(self, key: str):
        """The object's body and size, or None when it is gone."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.name, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._failure(f"reading {key}", error) from None
        except BotoCoreError as error:
            raise self._failure(f"reading {key}", error) from None

    def upload(self, key: str, stream: IO[bytes]) -> None:
        from boto3.s3.transfer import TransferConfig

        # Multipart in 16 MiB parts: a 1 GiB object never sits in memory.
        config = TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=16 << 20, max_concurrency=4)
        self._call(f"uploading {key}", self.client.upload_fileobj, Fileobj=stream, Bucket=self.name, Key=key,
                   Config=config)

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start:start + 1000]]
            self._call("deleting objects", self.client.delete_objects, Bucket=self.name,
                       Delete={"Objects": batch, "Quiet": True})


def s3_bucket(endpoint: str, access_key: str, secret_key: str, name: str, region: str = "us-east-1") -> Bucket:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise BackupError("boto3 is not installed here; install nself-mlflow[init]") from None
    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
        region_name=region,
        config=Config(s3={"addressing_style": "path"}, connect_timeout=10, read_timeout=300,
                      retries={"max_attempts": 3, "mode": "standard"}),
    )
    return Bucket(client, name, endpoint)
