"""Google Cloud Storage as a state store (google-cloud-storage, the `gcp` extra, imported
only when a gs:// URL is opened).

put_if_absent is an upload with the precondition `ifGenerationMatch=0` ("only if no live
object has this name"): GCS answers 412 conditionNotMet when one exists.
https://cloud.google.com/storage/docs/request-preconditions

An endpoint override (env BAKERY_GCS_ENDPOINT_URL: a local fake or emulator) uses
anonymous credentials; otherwise the default chain (the instance's service account on
GCE, application-default credentials on an operator's machine). Errors become one
StoreError line naming the URL, the key and GCS's reason; never an object's bytes.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from bakery.errors import StoreError, StoreNotFound
from bakery.store.base import check_key

ENDPOINT_ENV = "BAKERY_GCS_ENDPOINT_URL"
PAGE_SIZE = 1000
RETRIES = 5


def endpoint_url() -> str | None:
    return os.environ.get(ENDPOINT_ENV) or None


def default_client(project: str | None = None, endpoint: str | None = None) -> Any:
    """A storage.Client: anonymous against an endpoint override, else the default credentials."""
    try:
        from google.cloud import storage
    except ModuleNotFoundError:
        raise StoreError("gs:// stores need google-cloud-storage: pip install 'bakery[gcp]'") from None
    endpoint = endpoint or endpoint_url()
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project or "bakery-local", credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": endpoint})
    try:
        return storage.Client(project=project)
    except Exception as e:  # google.auth's DefaultCredentialsError, without importing it eagerly
        if type(e).__name__ == "DefaultCredentialsError":
            raise StoreError("no Google credentials: run `gcloud auth application-default login` "
                             "or set GOOGLE_APPLICATION_CREDENTIALS") from None
        raise


def _parsed(e: BaseException) -> tuple[str, str]:
    """(reason, message) of a google.api_core error. Downloads put GCS's JSON error body in
    the message after the URL; other calls parse it into `errors`."""
    message = str(getattr(e, "message", "") or e)
    errors = getattr(e, "errors", None) or []
    if not (errors and isinstance(errors[0], dict)) and "{" in message:
        try:
            body, _ = json.JSONDecoder().raw_decode(message[message.index("{"):])
            errors = body.get("error", {}).get("errors", [])
            message = body.get("error", {}).get("message", message)
        except ValueError:
            pass
    if errors and isinstance(errors[0], dict) and errors[0].get("reason"):
        return str(errors[0]["reason"]), message
    return type(e).__name__, message


def reason(e: BaseException) -> str:
    """GCS's reason ("notFound", "conditionNotMet", "forbidden", ...) or the error's class name."""
    return _parsed(e)[0]


def describe(e: BaseException) -> str:
    """`<code> <reason>: <GCS's message, shortened>` for a google.api_core error."""
    why, message = _parsed(e)
    return f"{getattr(e, 'code', '')} {why}: {message.splitlines()[0][:160] if message else ''}".strip()


class GCSStore:
    """Objects under `gs://bucket/prefix/`; `client` is any storage.Client (tests hand in one pointed at the fake)."""

    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None) -> None:
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.url = f"gs://{bucket}/{self.prefix}" if self.prefix else f"gs://{bucket}"
        self._client = client
        self._bucket: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = default_client()
        return self._client

    @property
    def bucket(self) -> Any:
        if self._bucket is None:
            self._bucket = self.client.bucket(self.bucket_name)
        return self._bucket

    def _key(self, key: str, *, prefix: bool = False) -> str:
        check_key(key, prefix=prefix)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, what: str, key: str, e: BaseException) -> StoreError:
        hint = {
            "forbidden": "the credentials in use may not do this (the masters' service account reaches only the cluster's bucket)",
            "notFound": f"bucket {self.bucket_name} does not exist (`bakery up` creates it)",
        }.get(reason(e), "")
        return StoreError(f"store {self.url}: {what} {key}: {describe(e)}" + (f"; {hint}" if hint else ""))

    def _exceptions(self) -> Any:
        from google.api_core import exceptions

        return exceptions

    def get(self, key: str) -> bytes:
        ex = self._exceptions()
        try:
            return bytes(self.bucket.blob(self._key(key)).download_as_bytes())
        except ex.NotFound as e:
            if _no_bucket(e):
                raise self._error("cannot read", key, e) from None
            raise StoreNotFound(f"store {self.url}: no object {key}") from None
        except (ex.GoogleAPIError, OSError) as e:
            raise self._error("cannot read", key, e) from None

    def put(self, key: str, data: bytes) -> None:
        ex = self._exceptions()
        try:
            self.bucket.blob(self._key(key)).upload_from_string(data, content_type="application/octet-stream")
        except (ex.GoogleAPIError, OSError) as e:
            raise self._error("cannot write", key, e) from None

    def put_if_absent(self, key: str, data: bytes) -> bool:
        ex = self._exceptions()
        blob = self.bucket.blob(self._key(key))
        uncertain = False
        for attempt in range(RETRIES):
            try:
                # Our own retries (retry=None): a 412 after an attempt whose answer was lost
                # may be that attempt's own success. Callers put distinct bytes (their node
                # name), so equal bytes then count as ours.
                blob.upload_from_string(data, content_type="application/octet-stream", if_generation_match=0, retry=None)
                return True
            except ex.PreconditionFailed:
                return uncertain and self._same(blob, data)
            except (ex.TooManyRequests, ex.InternalServerError, ex.BadGateway, ex.ServiceUnavailable,
                    ex.GatewayTimeout, ConnectionError) as e:
                if attempt + 1 == RETRIES:
                    raise self._error("cannot create", key, e) from None
                uncertain = True
                time.sleep(0.2 * 2**attempt)
            except (ex.GoogleAPIError, OSError) as e:
                raise self._error("cannot create", key, e) from None
        raise AssertionError("unreachable")

    def _same(self, blob: Any, data: bytes) -> bool:
        try:
            return bool(blob.download_as_bytes() == data)
        except Exception:
            return False

    def list(self, prefix: str = "") -> list[str]:
        ex = self._exceptions()
        full = self._key(prefix, prefix=True)
        cut = len(self.prefix) + 1 if self.prefix else 0
        try:
            blobs = self.client.list_blobs(self.bucket_name, prefix=full or None, page_size=PAGE_SIZE)
            return sorted(b.name[cut:] for b in blobs)
        except (ex.GoogleAPIError, OSError) as e:
            raise self._error("cannot list", prefix or "(everything)", e) from None

    def delete(self, key: str) -> None:
        ex = self._exceptions()
        try:
            self.bucket.blob(self._key(key)).delete()
        except ex.NotFound as e:
            if _no_bucket(e):
                raise self._error("cannot delete", key, e) from None
        except (ex.GoogleAPIError, OSError) as e:
            raise self._error("cannot delete", key, e) from None


def _no_bucket(e: BaseException) -> bool:
    """A 404 about the bucket ("The specified bucket does not exist."), not the object."""
    return "specified bucket" in _parsed(e)[1].lower()
