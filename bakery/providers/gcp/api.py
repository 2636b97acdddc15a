"""google-cloud-compute clients for one project, operation waits, and errors as one line.

google-cloud-compute is imported here, lazily (the `gcp` extra): `bakery --help` never
loads it. Every client uses the REST transport and the same client options, so an
endpoint override (`gcp.endpoint_url`, env BAKERY_GCP_ENDPOINT_URL) reaches all of them.
`operation.result()` would poll through a client built without those options (the real
host), so operations are waited on through our own zone/region/global operations clients.

Each API call goes through `Compute.call`, which counts calls per thread: `bench/up.py`
reads the counts to compute the critical-path floor.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from bakery.errors import ProviderError

ENDPOINT_ENV = "BAKERY_GCP_ENDPOINT_URL"
OPERATION_TIMEOUT = 900.0  # seconds; GCE's own wait returns at least every two minutes

_counter = threading.local()


def endpoint_url(spec_value: str | None) -> str | None:
    """The endpoint override: env BAKERY_GCP_ENDPOINT_URL wins over the spec's gcp.endpoint_url."""
    return os.environ.get(ENDPOINT_ENV) or spec_value


def thread_calls() -> int:
    """API calls made so far on this thread (since `reset_thread_calls`)."""
    return getattr(_counter, "n", 0)


def reset_thread_calls() -> None:
    _counter.n = 0


def _hint(code: int | None, project: str) -> str:
    if code in (401,):
        return "; check the credentials (gcloud auth application-default login, or GOOGLE_APPLICATION_CREDENTIALS)"
    if code == 403:
        return f"; the credentials need roles/compute.admin on project {project!r} and the Compute Engine API must be enabled"
    if code == 429:
        return "; a rate or quota limit: wait and rerun `bakery up` (it resumes), or ask for more quota"
    return ""


class Compute:
    """The compute_v1 clients bakery uses, built with one set of options."""

    def __init__(self, project: str, endpoint: str | None = None, credentials: Any = None) -> None:
        try:
            from google.api_core import exceptions
            from google.cloud import compute_v1
        except ModuleNotFoundError:
            raise ProviderError("the GCP provider needs google-cloud-compute: pip install 'bakery[gcp]'") from None
        self.project = project
        self.types = compute_v1
        self.exceptions = exceptions
        if endpoint and credentials is None:
            from google.auth.credentials import AnonymousCredentials

            credentials = AnonymousCredentials()
        options = {"api_endpoint": endpoint} if endpoint else None
        self._kw: dict[str, Any] = {"transport": "rest", "client_options": options, "credentials": credentials}
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, name: str) -> Any:
        """A cached client by class name without `Client`, e.g. `client("Instances")`."""
        with self._lock:
            if name not in self._clients:
                try:
                    self._clients[name] = getattr(self.types, f"{name}Client")(**self._kw)
                except Exception as e:  # google.auth raises its own DefaultCredentialsError
                    if type(e).__name__ == "DefaultCredentialsError":
                        raise ProviderError(
                            "no Google credentials found: run `gcloud auth application-default login` "
                            "or set GOOGLE_APPLICATION_CREDENTIALS"
                        ) from None
                    raise
            return self._clients[name]

    def close(self) -> None:
        """Close every client's HTTP session (each holds a connection pool). Clients are
        built again on the next call, so a provider can close after each command."""
        with self._lock:
            clients, self._clients = self._clients, {}
        for c in clients.values():
            c.transport.close()

    # -- calls -------------------------------------------------------------------------

    def call(self, what: str, fn: Callable[..., Any], *, allow: tuple[str, ...] = ("NotFound", "Conflict"), **kw: Any) -> Any:
        """One API call; a failure becomes ProviderError naming `what`.

        The google.api_core exceptions named in `allow` pass through for the caller to
        handle (by default NotFound and Conflict: "missing" and "already exists").
        """
        _counter.n = thread_calls() + 1
        try:
            return fn(**kw)
        except self.exceptions.GoogleAPICallError as e:
            if type(e).__name__ in allow:
                raise
            raise ProviderError(f"gcp: {what}: {e.code} {e.message}{_hint(e.code, self.project)}") from None
        except OSError as e:  # connection refused, DNS, TLS: requests' errors are OSErrors
            raise ProviderError(f"gcp: {what}: cannot reach the Compute API ({type(e).__name__}: {e})") from None

    def get(self, what: str, fn: Callable[..., Any], **kw: Any) -> Any | None:
        """A resource, or None when GCE says notFound."""
        try:
            return self.call(what, fn, allow=("NotFound",), **kw)
        except self.exceptions.NotFound:
            return None

    def list(self, what: str, fn: Callable[..., Any], request: Any) -> list[Any]:
        """Every item of a list call, following nextPageToken; each page counts as a call."""
        pager = self.call(what, fn, allow=(), request=request)
        items = list(pager.items) if hasattr(pager, "items") else []
        try:
            while pager.next_page_token:
                _counter.n = thread_calls() + 1
                request.page_token = pager.next_page_token
                pager = fn(request=request)
                items.extend(pager.items)
        except self.exceptions.GoogleAPICallError as e:
            raise ProviderError(f"gcp: {what}: {e.code} {e.message}") from None
        return items

    # -- operations --------------------------------------------------------------------

    def wait(self, op: Any, what: str, timeout: float = OPERATION_TIMEOUT) -> Any:
        """Block until `op` is DONE (through our own operations client); raise on its error."""
        done = self.types.Operation.Status.DONE
        deadline = time.monotonic() + timeout
        while op.status != done:
            if time.monotonic() > deadline:
                raise ProviderError(f"gcp: {what}: operation {op.name} not done after {timeout:.0f}s; rerun `bakery up` to resume")
            if op.zone:
                op = self.call(what, self.client("ZoneOperations").wait, allow=(), project=self.project, zone=_last(op.zone), operation=op.name)
            elif op.region:
                op = self.call(what, self.client("RegionOperations").wait, allow=(), project=self.project, region=_last(op.region), operation=op.name)
            else:
                op = self.call(what, self.client("GlobalOperations").wait, allow=(), project=self.project, operation=op.name)
        if op.error and op.error.errors:
            detail = "; ".join(f"{e.code}: {e.message}" for e in op.error.errors)
            raise ProviderError(f"gcp: {what}: {detail}{_hint(op.http_error_status_code or None, self.project)}")
        return op


def _last(link: str) -> str:
    return link.rstrip("/").rsplit("/", 1)[-1]
