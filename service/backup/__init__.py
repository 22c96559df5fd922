"""Back up the MLflow service into one archive, and restore it.

    archive    the archive's format: writing it, and verifying every checksum
    postgres   pg_dump, pg_restore and psql on the MLflow database
    bucket     the artifact bucket, through boto3
    restore    backup, restore and db-dump, step by step

The service commands import what they use from here.
"""

from service.backup.archive import ByteProgress, HashingReader, Progress, verify_archive
from service.backup.bucket import Bucket, s3_bucket
from service.backup.errors import BackupError
from service.backup.postgres import PostgresTools
from service.backup.restore import (
    BackupResult,
    RestorePlan,
    check_restored,
    create_backup,
    dump_sql,
    plan_restore,
    restore_backup,
)

__all__ = [
    "BackupError", "BackupResult", "Bucket", "ByteProgress", "HashingReader", "PostgresTools", "Progress",
    "RestorePlan", "check_restored", "create_backup", "dump_sql", "plan_restore", "restore_backup", "s3_bucket",
    "verify_archive",
]
