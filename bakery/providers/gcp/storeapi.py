"""The store's cloud clients on GCP: google-cloud-storage for the bucket, plain REST over
google-auth's authorized session for iam.googleapis.com (four calls do not justify another
client library), and their errors as one line.

Endpoints: env BAKERY_GCS_ENDPOINT_URL (storage) and BAKERY_GCP_IAM_ENDPOINT_URL (IAM);
with an override, anonymous credentials. An overridden Compute endpoint without the
other two is refused: it means a test or an emulator, and bakery would otherwise reach
the real storage and IAM APIs.
"""

from __future__ import annotations

import os
from typing import Any

from bakery.errors import ProviderError
from bakery.providers.gcp.api import endpoint_url as compute_endpoint
from bakery.spec import ClusterSpec

IAM_ENDPOINT_ENV = "BAKERY_GCP_IAM_ENDPOINT_URL"
IAM_DEFAULT = "https://iam.googleapis.com"
STORAGE_ENDPOINT_ENV = "BAKERY_GCS_ENDPOINT_URL"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def _endpoints(spec: ClusterSpec) -> tuple[str | None, str | None]:
    storage, iam = os.environ.get(STORAGE_ENDPOINT_ENV) or None, os.environ.get(IAM_ENDPOINT_ENV) or None
    if compute_endpoint(spec.provider_spec.endpoint_url) and not (storage and iam):  # type: ignore[union-attr]
        raise ProviderError(f"gcp: the Compute endpoint is overridden but {STORAGE_ENDPOINT_ENV} and {IAM_ENDPOINT_ENV} "
                            "are not: set them too (bakery would otherwise reach the real storage and IAM APIs)")
    return storage, iam


class Gcp:
    """The storage client and the IAM REST session for one spec (clients made on first use)."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.project: str = spec.provider_spec.project  # type: ignore[union-attr]
        self.storage_url, iam_url = _endpoints(spec)
        self.iam_url = (iam_url or IAM_DEFAULT).rstrip("/")
        self._storage: Any = None
        self._session: Any = None

    @property
    def storage(self) -> Any:
        if self._storage is None:
            from bakery.store.gcs import default_client

            self._storage = default_client(self.project, self.storage_url)
        return self._storage

    @property
    def session(self) -> Any:
        if self._session is None:
            from google.auth.transport.requests import AuthorizedSession

            if os.environ.get(IAM_ENDPOINT_ENV):
                from google.auth.credentials import AnonymousCredentials

                credentials: Any = AnonymousCredentials()
            else:
                import google.auth

                credentials, _ = google.auth.default(scopes=[SCOPE])
            self._session = AuthorizedSession(credentials)
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        if self._storage is not None:
            self._storage.close()
        self._session = self._storage = None

    # -- IAM REST ----------------------------------------------------------------------

    def iam(self, method: str, path: str, body: dict[str, Any] | None = None, *, missing_ok: bool = False) -> dict[str, Any] | None:
        url = f"{self.iam_url}/v1/{path}"
        try:
            r = self.session.request(method, url, json=body, timeout=60)
        except OSError as e:
            raise ProviderError(f"gcp: IAM {method} {path}: cannot reach {self.iam_url} ({type(e).__name__})") from None
        if r.status_code == 404 and missing_ok:
            return None
        if r.status_code >= 300:
            try:
                err = r.json().get("error", {})
            except ValueError:
                err = {}
            raise IamError(r.status_code, str(err.get("status", "")),
                            f"gcp: IAM {method} {path}: {r.status_code} {err.get('status', '')}: {str(err.get('message', r.text))[:200]}")
        return r.json() if r.content else {}


class IamError(ProviderError):
    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code, self.status = code, status


# -- the bucket --------------------------------------------------------------------------


def api_errors() -> Any:
    from google.api_core import exceptions

    return exceptions


def storage_error(what: str, e: BaseException) -> ProviderError:
    from bakery.store.gcs import describe

    return ProviderError(f"gcp: {what}: {describe(e)}")
