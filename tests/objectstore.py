"""The S3-compatible server the tests reach (fixtures ``s3`` and ``s3_bucket`` in
tests/conftest.py). A module of its own, not conftest: test modules import it by name, and
``conftest`` would resolve to whichever conftest.py is first on the path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class S3:
    endpoint: str  # http://host:port
    env: dict[str, str]  # the AWS_* settings that reach it (also set in os.environ)

    def client(self) -> Any:
        """A boto3 S3 client of the server: the tests' own, independent of pyarrow's."""
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.env["AWS_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])
