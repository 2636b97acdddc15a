"""GCP: the cluster's store bucket, and `ensure`/`delete` for `up` and `down`.

The bucket (google-cloud-storage): uniform bucket-level access on, public access
prevention enforced, versioning on, label `bakery-cluster=<name>` when bakery made it
(or when it has the derived default name: an interrupted `up` made it). Each setting is
read first and one PATCH fixes whatever differs, so a second `up` writes nothing.
`ensure` then makes the masters' service account and its bindings (iam.py); `delete`
removes those, and with `purge` every version of the cluster's objects and (when it is
bakery's and holds nothing else) the bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bakery.errors import ProviderError
from bakery.providers.base import Ledger, forget_etcd
from bakery.providers.gcp import iam
from bakery.providers.gcp.resources import LABEL_CLUSTER
from bakery.providers.gcp.storeapi import Gcp, api_errors, storage_error
from bakery.spec import ClusterSpec
from bakery.store import layout, location
from bakery.store.gcs import GCSStore


@dataclass(frozen=True)
class StoreIdentity:
    url: str
    bucket: str
    owned: bool  # the bucket carries bakery's label for this cluster
    service_account: str


def ensure_bucket(g: Gcp, ledger: Ledger) -> tuple[str, bool]:
    """(bucket name, owned) of the cluster's bucket, created and configured as needed."""
    ex = api_errors()
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
            raise storage_error(f"create bucket {name}", e) from None
    except ex.GoogleAPIError as e:
        raise storage_error(f"get bucket {name}", e) from None

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
            raise storage_error(f"update bucket {name} ({', '.join(changed)})", e) from None
        ledger.made(", ".join(changed) + " of bucket", name)
    return name, (bucket.labels or {}).get(LABEL_CLUSTER) == spec.name


# -- the service account and its bindings ------------------------------------------------


def ensure(spec: ClusterSpec, ledger: Ledger, g: Gcp | None = None) -> StoreIdentity:
    """Bucket, service account, bindings: what `up` needs before any master boots."""
    g = g or Gcp(spec)
    try:
        name, owned = ensure_bucket(g, ledger)
        email, fresh = iam.ensure_service_account(g, ledger)
        iam.ensure_bindings(g, name, email, ledger, fresh=fresh)
    finally:
        g.close()
    return StoreIdentity(location.store_url(spec), name, owned, email)


def delete(spec: ClusterSpec, ledger: Ledger, *, purge: bool = False, g: Gcp | None = None) -> None:
    """`down`: our bindings off the bucket, bakery's service account deleted; with `purge`,
    every version of the cluster's objects and (when bakery's and otherwise empty) the bucket."""
    ex = api_errors()
    g = g or Gcp(spec)
    _, name, root = location.split(location.store_url(spec))
    try:
        try:
            bucket = g.storage.get_bucket(name)
        except (ex.NotFound, ex.Forbidden):
            bucket = None
        if bucket is not None and not purge:
            # the masters' boot disks went with them (auto_delete): their etcd is gone
            forget_etcd(GCSStore(name, root, client=g.storage), spec.name, ledger)
        if bucket is not None:
            iam.remove_bindings(g, bucket, ledger)
        iam.delete_service_account(g, ledger)
        if purge and bucket is not None:
            _purge(g, bucket, root, ledger)
    except ex.GoogleAPIError as e:
        raise storage_error(f"clean up bucket {name}", e) from None
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
