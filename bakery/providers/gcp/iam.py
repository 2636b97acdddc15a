"""GCP: the masters' service account and its bucket bindings.

The service account `<cluster>-bakery` (unless `gcp.service_account` is given) is made
through iam.googleapis.com. Service accounts take no labels, so its description carries
the cluster marker; one without it is not bakery's and is never adopted or deleted.

Access to the bucket only, by bucket-level IAM bindings with IAM Conditions (which need
uniform bucket-level access):

    roles/storage.objectViewer   objects under <prefix>/<cluster>/, and the bucket itself
    roles/storage.objectUser     objects under <prefix>/<cluster>/{members,etcd,backups}/

The closest honest equivalent of S3's prefix-conditioned ListBucket: GCS checks
storage.objects.list against the bucket, not a prefix, so the account may list every
object *name* in the bucket (reading stays limited to the cluster's prefix). With the
default bucket, one per cluster, that is the cluster's own names.
https://cloud.google.com/storage/docs/access-control/iam#conditions
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

from bakery.errors import ProviderError
from bakery.providers.base import Ledger
from bakery.providers.gcp.resources import marker
from bakery.providers.gcp.storeapi import Gcp, IamError, api_errors, storage_error
from bakery.spec import ClusterSpec
from bakery.store import layout, location

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
        except IamError as e:
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
    ex = api_errors()
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
                raise storage_error(f"bind {email} on bucket {bucket_name}", e) from None
            time.sleep(2.0)
        except ex.PreconditionFailed:
            if time.monotonic() > deadline:  # someone else changed the policy (etag): read it again
                raise ProviderError(f"gcp: bucket {bucket_name}'s IAM policy keeps changing under bakery; rerun `bakery up`") from None
        except ex.GoogleAPIError as e:
            raise storage_error(f"bind {email} on bucket {bucket_name}", e) from None


def remove_bindings(g: Gcp, bucket: Any, ledger: Ledger) -> None:
    """Take the cluster's two bindings off `bucket`'s policy (no write when there are none)."""
    spec = g.spec
    policy = bucket.get_iam_policy(requested_policy_version=3)
    kept = [dict(b) for b in policy.bindings if not _ours(b, spec.name)]
    if len(kept) != len(list(policy.bindings)):
        policy.version = 3
        policy.bindings = kept
        bucket.set_iam_policy(policy)
        ledger.gone("bucket bindings of", service_account(spec))


def delete_service_account(g: Gcp, ledger: Ledger) -> None:
    """Delete bakery's service account for the cluster (never a given or a foreign one)."""
    spec = g.spec
    if spec.provider_spec.service_account:  # type: ignore[union-attr]
        return
    email = service_account(spec)
    found = g.iam("GET", f"projects/{g.project}/serviceAccounts/{email}", missing_ok=True)
    if found is not None and found.get("description") == marker(spec.name):
        g.iam("DELETE", f"projects/{g.project}/serviceAccounts/{email}", missing_ok=True)
        ledger.gone("service-account", email)
