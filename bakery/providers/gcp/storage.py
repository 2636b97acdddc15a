"""GCP: the cluster's store bucket and the masters' service account.

The bucket (google-cloud-storage): uniform bucket-level access on, public access
prevention enforced, versioning on, label `bakery-cluster=<name>` when bakery made it
(or when it has the derived default name: an interrupted `up` made it). Each setting is
read first and one PATCH fixes whatever differs, so a second `up` writes nothing.

The service account `<cluster>-bakery` (unless `gcp.service_account` is given) is made
through iam.googleapis.com with plain REST over google-auth's authorized session: four
calls (get, create, delete) do not justify another client library. Service accounts
take no labels, so its description carries the cluster marker; one without it is not
bakery's and is never adopted or deleted.

Access to the bucket only, by bucket-level IAM bindings with IAM Conditions (which need
uniform bucket-level access):

    roles/storage.objectViewer   objects under <prefix>/<cluster>/, and the bucket itself
    roles/storage.objectUser     objects under <prefix>/<cluster>/{members,etcd,backups}/

The closest honest equivalent of S3's prefix-conditioned ListBucket: GCS checks
storage.objects.list against the bucket, not a prefix, so the account may list every
object *name* in the bucket (reading stays limited to the cluster's prefix). With the
default bucket, one per cluster, that is the cluster's own names.
https://cloud.google.com/storage/docs/access-control/iam#conditions

Endpoints: env BAKERY_GCS_ENDPOINT_URL (storage) and BAKERY_GCP_IAM_ENDPOINT_URL (IAM);
with an override, anonymous credentials. An overridden Compute endpoint without the
other two is refused: it means a test or an emulator, and bakery would otherwise reach
the real storage and IAM APIs.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from bakery.errors import ProviderError
from bakery.providers.base import Ledger
from bakery.providers.gcp.api import endpoint_url as compute_endpoint
from bakery.providers.gcp.resources import LABEL_CLUSTER, marker
from bakery.spec import ClusterSpec
from bakery.store import layout, location

IAM_ENDPOINT_ENV = "BAKERY_GCP_IAM_ENDPOINT_URL"
IAM_DEFAULT = "https://iam.googleapis.com"
STORAGE_ENDPOINT_ENV = "BAKERY_GCS_ENDPOINT_URL"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
READER, WRITER = "roles/storage.objectViewer", "roles/storage.objectUser"
PROPAGATION_SECONDS = 60.0  # a new service account is usable in bindings within about a minute
ACCOUNT_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])$")  # IAM's rule for account ids, 6-30 long


def account_id(cluster: str) -> str:
    """6-30 characters, [a-z]([-a-z0-9]*[a-z0-9]) (IAM's rule); long names keep a hash."""
    name = f"{cluster}-bakery"
    if len(name) <= 30:
        return name
    return f"{cluster[:21].rstrip('-')}-{hashlib.sha256(cluster.encode()).hexdigest()[:8]}"


def service_account(spec: ClusterSpec) -> str:
    """The masters' service account e-mail: the spec's, else bakery's deterministic one."""
    gcp = spec.provider_spec
    return gcp.service_account or f"{account_id(spec.name)}@{gcp.project}.iam.gserviceaccount.com"  # type: ignore[union-attr]


@dataclass(frozen=True)
class StoreIdentity:
    url: str
    bucket: str
    owned: bool  # the bucket carries bakery's label for this cluster
    service_account: str


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
            raise _IamError(r.status_code, str(err.get("status", "")),
                            f"gcp: IAM {method} {path}: {r.status_code} {err.get('status', '')}: {str(err.get('message', r.text))[:200]}")
        return r.json() if r.content else {}


class _IamError(ProviderError):
    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code, self.status = code, status


# -- the bucket --------------------------------------------------------------------------


def _api_errors() -> Any:
    from google.api_core import exceptions

    return exceptions


def _storage_error(what: str, e: BaseException) -> ProviderError:
    from bakery.store.gcs import describe

    return ProviderError(f"gcp: {what}: {describe(e)}")


def ensure_bucket(g: Gcp, ledger: Ledger) -> tuple[str, bool]:
    """(bucket name, owned) of the cluster's bucket, created and configured as needed."""
    ex = _api_errors()
    spec = g.spec
    _, name, _ = location.split(location.store_url(spec))
    foreign = (f"gcp: bucket {name} exists but these credentials may not use it (bucket names are global: it may be "
               "another project's): set store.url to a bucket of yours")
    created = False
    try:
        bucket = g.storage.get_bucket(name)
        ledger.found("bucket", name)
    except ex.Forbidden:
        raise ProviderError(foreign) from None
    except ex.NotFound:
        bucket = g.storage.bucket(name)
        bucket.iam_configuration.uniform_bucket_level_access_enabled = True
        bucket.iam_configuration.public_access_prevention = "enforced"
        bucket.versioning_enabled = True
        bucket.labels = {LABEL_CLUSTER: spec.name}
        try:
            bucket = g.storage.create_bucket(bucket, project=g.project, location=spec.provider_spec.region)  # type: ignore[union-attr]
            created = True
            ledger.made("bucket", name)
        except ex.Conflict:
            try:
                bucket = g.storage.get_bucket(name)  # another run made it between get and create
            except (ex.Forbidden, ex.NotFound):
                raise ProviderError(foreign) from None
            ledger.found("bucket", name)
        except ex.GoogleAPIError as e:
            raise _storage_error(f"create bucket {name}", e) from None
    except ex.GoogleAPIError as e:
        raise _storage_error(f"get bucket {name}", e) from None

    label = (bucket.labels or {}).get(LABEL_CLUSTER)
    if label not in (None, spec.name):
        raise ProviderError(f"gcp: bucket {name} belongs to bakery cluster {label!r}, not {spec.name!r}: "
                            "give this cluster its own store.url")
    changed = []
    if label is None and (created or spec.store.url is None):
        bucket.labels = {**(bucket.labels or {}), LABEL_CLUSTER: spec.name}
        changed.append("label")
    iam = bucket.iam_configuration
    if not iam.uniform_bucket_level_access_enabled:
        iam.uniform_bucket_level_access_enabled = True
        changed.append("uniform bucket-level access")
    if iam.public_access_prevention != "enforced":
        iam.public_access_prevention = "enforced"
        changed.append("public access prevention")
    if not bucket.versioning_enabled:
        bucket.versioning_enabled = True
        changed.append("versioning")
    if changed:
        try:
            bucket.patch()
        except ex.GoogleAPIError as e:
            raise _storage_error(f"update bucket {name} ({', '.join(changed)})", e) from None
        ledger.made(", ".join(changed) + " of bucket", name)
    return name, (bucket.labels or {}).get(LABEL_CLUSTER) == spec.name


# -- the service account and its bindings ------------------------------------------------


def ensure_service_account(g: Gcp, ledger: Ledger) -> tuple[str, bool]:
    """(e-mail, made just now) of the masters' service account."""
    spec = g.spec
    if spec.provider_spec.service_account:  # type: ignore[union-attr]
        return service_account(spec), False
    email = service_account(spec)
    path = f"projects/{g.project}/serviceAccounts"
    found = g.iam("GET", f"{path}/{email}", missing_ok=True)
    if found is None:
        body = {"accountId": account_id(spec.name),
                "serviceAccount": {"displayName": f"bakery {spec.name} masters", "description": marker(spec.name)}}
        try:
            found = g.iam("POST", path, body)
            ledger.made("service-account", email)
            return email, True
        except _IamError as e:
            if e.code != 409:
                raise
            found = g.iam("GET", f"{path}/{email}")
    assert found is not None
    if found.get("description") != marker(spec.name):
        raise ProviderError(f"gcp: service account {email} exists but is not bakery's for {spec.name} "
                            f"(its description is not {marker(spec.name)!r}): set gcp.service_account, or remove it")
    ledger.found("service-account", email)
    return email, False


def bindings(spec: ClusterSpec, bucket: str, member: str) -> list[dict[str, Any]]:
    """The two conditioned bucket bindings of the masters' service account."""
    b = location.split(location.store_url(spec))[2]
    root = f"projects/_/buckets/{bucket}/objects/{b + '/' if b else ''}"
    read = (f'resource.name == "projects/_/buckets/{bucket}" || '
            f'resource.name.startsWith("{root}{layout.cluster_prefix(spec.name)}")')
    write = " || ".join(f'resource.name.startsWith("{root}{p}")' for p in layout.node_writable_prefixes(spec.name))
    return [
        {"role": READER, "members": [member], "condition": {
            "title": f"bakery-read-{spec.name}", "description": "the cluster's prefix of bakery's store", "expression": read}},
        {"role": WRITER, "members": [member], "condition": {
            "title": f"bakery-write-{spec.name}", "description": "the prefixes masters write", "expression": write}},
    ]


def _ours(binding: dict[str, Any], cluster: str) -> bool:
    return (binding.get("condition") or {}).get("title") in (f"bakery-read-{cluster}", f"bakery-write-{cluster}")


def _normal(items: Any) -> list[tuple[str, tuple[str, ...], str]]:
    return sorted((b["role"], tuple(sorted(b["members"])), repr(sorted((b.get("condition") or {}).items()))) for b in items)


def ensure_bindings(g: Gcp, bucket_name: str, email: str, ledger: Ledger, *, fresh: bool = False) -> None:
    """Our two bindings on the bucket's policy (version 3), replacing older ones of ours; no write when equal."""
    ex = _api_errors()
    want = bindings(g.spec, bucket_name, f"serviceAccount:{email}")
    bucket = g.storage.bucket(bucket_name)
    deadline = time.monotonic() + (PROPAGATION_SECONDS if fresh else 0.0)
    while True:
        try:
            policy = bucket.get_iam_policy(requested_policy_version=3)
            current = [dict(b) for b in policy.bindings]
            ours = [b for b in current if _ours(b, g.spec.name)]
            if _normal(ours) == _normal(want):
                ledger.found("bucket bindings of", email)
                return
            policy.version = 3
            policy.bindings = [b for b in current if not _ours(b, g.spec.name)] + want
            bucket.set_iam_policy(policy)
            ledger.made("bucket bindings of", email)
            return
        except ex.BadRequest as e:
            # A service account made a moment ago is not yet known to every IAM replica.
            if "does not exist" not in str(e) or time.monotonic() > deadline:
                raise _storage_error(f"bind {email} on bucket {bucket_name}", e) from None
            time.sleep(2.0)
        except ex.PreconditionFailed:
            if time.monotonic() > deadline:  # someone else changed the policy (etag): read it again
                raise ProviderError(f"gcp: bucket {bucket_name}'s IAM policy keeps changing under bakery; rerun `bakery up`") from None
        except ex.GoogleAPIError as e:
            raise _storage_error(f"bind {email} on bucket {bucket_name}", e) from None


def ensure(spec: ClusterSpec, ledger: Ledger, g: Gcp | None = None) -> StoreIdentity:
    """Bucket, service account, bindings: what `up` needs before any master boots."""
    g = g or Gcp(spec)
    try:
        name, owned = ensure_bucket(g, ledger)
        email, fresh = ensure_service_account(g, ledger)
        ensure_bindings(g, name, email, ledger, fresh=fresh)
    finally:
        g.close()
    return StoreIdentity(location.store_url(spec), name, owned, email)


def delete(spec: ClusterSpec, ledger: Ledger, *, purge: bool = False, g: Gcp | None = None) -> None:
    """`down`: our bindings off the bucket, bakery's service account deleted; with `purge`,
    every version of the cluster's objects and (when bakery's and otherwise empty) the bucket."""
    ex = _api_errors()
    g = g or Gcp(spec)
    _, name, root = location.split(location.store_url(spec))
    try:
        try:
            bucket = g.storage.get_bucket(name)
        except (ex.NotFound, ex.Forbidden):
            bucket = None
        if bucket is not None:
            policy = bucket.get_iam_policy(requested_policy_version=3)
            kept = [dict(b) for b in policy.bindings if not _ours(b, spec.name)]
            if len(kept) != len(list(policy.bindings)):
                policy.version = 3
                policy.bindings = kept
                bucket.set_iam_policy(policy)
                ledger.gone("bucket bindings of", service_account(spec))
        if not spec.provider_spec.service_account:  # type: ignore[union-attr]
            email = service_account(spec)
            found = g.iam("GET", f"projects/{g.project}/serviceAccounts/{email}", missing_ok=True)
            if found is not None and found.get("description") == marker(spec.name):
                g.iam("DELETE", f"projects/{g.project}/serviceAccounts/{email}", missing_ok=True)
                ledger.gone("service-account", email)
        if purge and bucket is not None:
            _purge(g, bucket, root, ledger)
    except ex.GoogleAPIError as e:
        raise _storage_error(f"clean up bucket {name}", e) from None
    finally:
        g.close()


def _purge(g: Gcp, bucket: Any, root: str, ledger: Ledger) -> None:
    spec = g.spec
    mine = f"{root}/{layout.cluster_prefix(spec.name)}" if root else layout.cluster_prefix(spec.name)
    removed = 0
    for blob in g.storage.list_blobs(bucket.name, prefix=mine, versions=True):
        bucket.delete_blob(blob.name, generation=blob.generation)
        removed += 1
    if removed:
        ledger.gone(f"{removed} object versions under", f"gs://{bucket.name}/{mine}")
    if (bucket.labels or {}).get(LABEL_CLUSTER) != spec.name:
        ledger.progress(f"bucket {bucket.name}", "kept", f"not bakery's (no {LABEL_CLUSTER}={spec.name} label); only {mine} was emptied")
        return
    if any(True for _ in g.storage.list_blobs(bucket.name, versions=True, max_results=1)):
        ledger.progress(f"bucket {bucket.name}", "kept", f"it holds objects outside {mine}; only the cluster's were deleted")
        return
    bucket.delete()
    ledger.gone("bucket", bucket.name)
