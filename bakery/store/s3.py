"""S3 as a state store (boto3, the `aws` extra, imported only when an s3:// URL is opened).

put_if_absent is a conditional PutObject (`If-None-Match: *`): S3 answers 412
PreconditionFailed when the key exists, and 409 ConditionalRequestConflict while another
conditional write to the key is in flight (then we ask again: the next answer is 412 or
success). https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html

Errors become one StoreError line naming the URL, the key and S3's code (AccessDenied,
NoSuchBucket, ...); never a botocore traceback, never an object's bytes.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bakery.errors import StoreError, StoreNotFound
from bakery.store.base import check_key

ENDPOINT_ENV = "BAKERY_AWS_ENDPOINT_URL"  # the same override the AWS provider honours
CONFLICT_RETRIES = 10


def default_client(region: str | None = None, endpoint: str | None = None) -> Any:
    """An S3 client from the default credential chain (env, profile, instance role)."""
    try:
        import boto3
        from botocore.config import Config
    except ModuleNotFoundError:
        raise StoreError("s3:// stores need boto3: pip install 'bakery[aws]'") from None
    config = Config(retries={"mode": "standard", "max_attempts": 5}, user_agent_extra="bakery")
    return boto3.session.Session(region_name=region).client(
        "s3", endpoint_url=endpoint or os.environ.get(ENDPOINT_ENV) or None, config=config)


def _code(e: BaseException) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", "") or "")


class S3Store:
    """Objects under `s3://bucket/prefix/`; `client` is any boto3 S3 client (tests hand in one pointed at moto)."""

    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None, region: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client = client
        self._region = region

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = default_client(self._region)
        return self._client

    def _key(self, key: str, *, prefix: bool = False) -> str:
        check_key(key, prefix=prefix)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, what: str, key: str, e: BaseException) -> StoreError:
        """One line for a botocore failure: the URL, the key, S3's code and what it means."""
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        where = f"store {self.url}: {what} {key}" if key else f"store {self.url}: {what}"
        if isinstance(e, NoCredentialsError):
            return StoreError(f"{where}: no AWS credentials (instance profile, AWS_PROFILE or AWS_ACCESS_KEY_ID)")
        if isinstance(e, EndpointConnectionError):
            return StoreError(f"{where}: cannot reach {e.kwargs.get('endpoint_url')}")
        if isinstance(e, ClientError):
            code = _code(e) or str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "error"))
            hint = {
                "NoSuchBucket": f"bucket {self.bucket} does not exist (`bakery up` creates it)",
                "AccessDenied": "the credentials in use may not do this (the masters' role grants only the cluster's prefix)",
                "403": "the credentials in use may not do this",
                "PermanentRedirect": f"bucket {self.bucket} is in another region",
            }.get(code, str(e.response.get("Error", {}).get("Message", ""))[:160])
            return StoreError(f"{where}: {code}" + (f": {hint}" if hint else ""))
        return StoreError(f"{where}: {type(e).__name__}: {str(e)[:160]}")

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key(key)
        try:
            return self.client.get_object(Bucket=self.bucket, Key=full)["Body"].read()
        except ClientError as e:
            if _code(e) == "NoSuchKey":
                raise StoreNotFound(f"store {self.url}: no object {key}") from None
            if _code(e) in ("AccessDenied", "403") and self._absent(full):
                # Without an unconditioned s3:ListBucket S3 answers 403, not 404, for a
                # missing key; a listing the role may make tells the two apart.
                raise StoreNotFound(f"store {self.url}: no object {key}") from None
            raise self._error("cannot read", key, e) from None
        except BotoCoreError as e:
            raise self._error("cannot read", key, e) from None

    def _absent(self, full: str) -> bool:
        """True when a listing of `full` shows no such key; False when it exists or cannot be listed."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=full, MaxKeys=1)
        except (ClientError, BotoCoreError):
            return False
        return not any(o["Key"] == full for o in listed.get("Contents", []))

    def put(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key(key)
        try:
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data)
        except (ClientError, BotoCoreError) as e:
            raise self._error("cannot write", key, e) from None

    def put_if_absent(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key(key)
        for attempt in range(CONFLICT_RETRIES):
            try:
                self.client.put_object(Bucket=self.bucket, Key=full, Body=data, IfNoneMatch="*")
                return True
            except ClientError as e:
                code = _code(e)
                if code == "PreconditionFailed":
                    retried = e.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
                    # botocore resent the request (a lost answer): the object may be our own
                    # first attempt. Callers put distinct bytes (their node name), so equal
                    # bytes mean we won.
                    return bool(retried) and self._same(full, data)
                if code == "ConditionalRequestConflict" and attempt + 1 < CONFLICT_RETRIES:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise self._error("cannot create", key, e) from None
            except BotoCoreError as e:
                raise self._error("cannot create", key, e) from None
        raise StoreError(f"store {self.url}: cannot create {key}: ConditionalRequestConflict {CONFLICT_RETRIES} times")

    def _same(self, full: str, data: bytes) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return bool(self.client.get_object(Bucket=self.bucket, Key=full)["Body"].read() == data)
        except (ClientError, BotoCoreError):
            return False

    def list(self, prefix: str = "") -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key(prefix, prefix=True)
        cut = len(self.prefix) + 1 if self.prefix else 0
        keys = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                keys.extend(o["Key"][cut:] for o in page.get("Contents", []))
        except (ClientError, BotoCoreError) as e:
            raise self._error("cannot list", prefix or "(everything)", e) from None
        return sorted(keys)

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=full)  # S3 answers 204 for a missing key too
        except (ClientError, BotoCoreError) as e:
            raise self._error("cannot delete", key, e) from None
