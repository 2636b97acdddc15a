"""The cluster's S3 bucket: created when absent, with Block Public Access (all four
settings), default encryption (SSE-S3, or SSE-KMS with `store.kms_key_id`) and
versioning on; each setting read first and written only when it differs, so a second
`up` makes no write. `purge` (for `bakery down --purge`) empties the bucket (every
version and delete marker) and deletes it, but only a bucket bakery tagged for this
cluster and holding nothing outside the cluster's prefix; otherwise it removes the
cluster's own keys and keeps the bucket.

A bucket bakery creates is tagged `bakery:cluster=<name>` right after CreateBucket (S3
takes no tags on create, and moto ignores CreateBucketConfiguration.Tags). A found
untagged bucket with the derived default name is one an interrupted `up` created: it
is tagged then; a bucket named by `store.url` is the user's and never tagged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from bakery.errors import ProviderError
from bakery.providers.aws.common import TAG_CLUSTER
from bakery.providers.base import Ledger
from bakery.spec import ClusterSpec
from bakery.store import location

BLOCK_ALL = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}


@dataclass(frozen=True)
class Bucket:
    url: str  # the store URL (s3://bucket[/prefix])
    name: str
    prefix: str  # the store's root prefix inside the bucket ('' for none)
    owned: bool  # tagged by bakery for this cluster


def of(spec: ClusterSpec) -> Bucket:
    url = location.store_url(spec)
    _, name, prefix = location.split(url)
    return Bucket(url, name, prefix, owned=False)


def cluster_prefix(b: Bucket, cluster: str) -> str:
    """Where the cluster's objects live in the bucket: `<prefix>/<cluster>/`."""
    return f"{b.prefix}/{cluster}/" if b.prefix else f"{cluster}/"


def _code(e: Any) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


def encryption_rule(spec: ClusterSpec) -> dict[str, Any]:
    if spec.store.kms_key_id:
        return {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": spec.store.kms_key_id},
                "BucketKeyEnabled": True}
    return {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}


def ensure(s3: Any, spec: ClusterSpec, ledger: Ledger) -> Bucket:
    """The cluster's bucket, created and configured as needed; `owned` says whether bakery tagged it.
    `up` runs the same pieces as steps: find_or_create, then the tag and each setting in parallel."""
    b, created = find_or_create(s3, spec, ledger)
    owned = ensure_tag(s3, spec, b, created, ledger)
    for setting in SETTINGS:
        setting(s3, spec, b.name, ledger)
    return replace(b, owned=owned)


def find_or_create(s3: Any, spec: ClusterSpec, ledger: Ledger) -> tuple[Bucket, bool]:
    """(the bucket, whether this call created it)."""
    from botocore.exceptions import ClientError

    b = of(spec)
    region = spec.provider_spec.region  # type: ignore[union-attr]
    try:
        s3.head_bucket(Bucket=b.name)
        ledger.found("bucket", b.name)
        return b, False
    except ClientError as e:
        code = _code(e)
        if code in ("403", "AccessDenied"):
            raise ProviderError(_foreign(b.name)) from None
        if code in ("301", "PermanentRedirect"):
            raise ProviderError(f"bucket {b.name} exists in another region than {region}: set store.url to a bucket in {region}") from None
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise
    created = _create(s3, b.name, region)
    (ledger.made if created else ledger.found)("bucket", b.name)
    return b, created


def ensure_tag(s3: Any, spec: ClusterSpec, b: Bucket, created: bool, ledger: Ledger) -> bool:
    """Whether the bucket is bakery's for this cluster; tags it when bakery made it (now, or in an
    interrupted run: the derived default name)."""
    return _ensure_tag(s3, b.name, spec.name, tag=created or spec.store.url is None, ledger=ledger)


def _foreign(name: str) -> str:
    return (f"bucket {name} exists but these credentials may not use it (S3 bucket names are global: it may be another "
            "account's): set store.url to a bucket of yours, e.g. s3://<name>-<something unique>")


def _create(s3: Any, name: str, region: str) -> bool:
    from botocore.exceptions import ClientError

    kwargs: dict[str, Any] = {"Bucket": name}
    if region != "us-east-1":  # us-east-1 refuses a LocationConstraint naming itself
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
        return True
    except ClientError as e:
        if _code(e) == "BucketAlreadyOwnedByYou":  # another run created it between head and create
            return False
        if _code(e) == "BucketAlreadyExists":
            raise ProviderError(_foreign(name)) from None
        raise


def _ensure_tag(s3: Any, name: str, cluster: str, *, tag: bool, ledger: Ledger) -> bool:
    """True when the bucket carries `bakery:cluster=<cluster>` (adding it if `tag`)."""
    from botocore.exceptions import ClientError

    try:
        tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=name)["TagSet"]}
    except ClientError as e:
        if _code(e) != "NoSuchTagSet":
            raise
        tags = {}
    if tags.get(TAG_CLUSTER) == cluster:
        return True
    if TAG_CLUSTER in tags:
        raise ProviderError(f"bucket {name} belongs to bakery cluster {tags[TAG_CLUSTER]!r}, not {cluster!r}: "
                            "give this cluster its own store.url")
    if not tag:
        return False
    tags.update({TAG_CLUSTER: cluster, "Name": name})
    s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]})
    ledger.made("bucket tags of", name)
    return True


def ensure_public_access_block(s3: Any, spec: ClusterSpec, name: str, ledger: Ledger) -> None:
    from botocore.exceptions import ClientError

    try:
        pab = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
    except ClientError as e:
        if _code(e) != "NoSuchPublicAccessBlockConfiguration":
            raise
        pab = {}
    if any(pab.get(k) is not True for k in BLOCK_ALL):
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=dict(BLOCK_ALL))
        ledger.made("public access block of", name)


def ensure_encryption(s3: Any, spec: ClusterSpec, name: str, ledger: Ledger) -> None:
    from botocore.exceptions import ClientError

    want = encryption_rule(spec)
    try:
        rules = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
    except ClientError as e:
        if _code(e) != "ServerSideEncryptionConfigurationNotFoundError":
            raise
        rules = []
    have = rules[0].get("ApplyServerSideEncryptionByDefault", {}) if rules else {}
    if have != want["ApplyServerSideEncryptionByDefault"]:
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": [want]})
        ledger.made("default encryption of", name)


def ensure_versioning(s3: Any, spec: ClusterSpec, name: str, ledger: Ledger) -> None:
    if s3.get_bucket_versioning(Bucket=name).get("Status") != "Enabled":
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        ledger.made("versioning of", name)


SETTINGS = (ensure_public_access_block, ensure_encryption, ensure_versioning)


def exists(s3: Any, spec: ClusterSpec) -> bool:
    """Whether the cluster's bucket exists (HeadBucket: 404 when it does not)."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=of(spec).name)
    except ClientError as e:
        if _code(e) in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise
    return True


def purge(s3: Any, spec: ClusterSpec, ledger: Ledger) -> None:
    """Delete every version of the cluster's objects; delete the bucket too when it is
    bakery's own for this cluster and nothing else is in it."""
    b = of(spec)
    if not exists(s3, spec):
        return
    owned = _ensure_tag(s3, b.name, spec.name, tag=False, ledger=ledger)
    mine = cluster_prefix(b, spec.name)
    removed = _delete_versions(s3, b.name, mine)
    if removed:
        ledger.gone(f"{removed} object versions under", f"s3://{b.name}/{mine}")
    if not owned:
        ledger.progress(f"bucket {b.name}", "kept", f"not bakery's (no {TAG_CLUSTER}={spec.name} tag); only {mine} was emptied")
        return
    others = s3.list_object_versions(Bucket=b.name, MaxKeys=1)
    if others.get("Versions") or others.get("DeleteMarkers"):
        ledger.progress(f"bucket {b.name}", "kept", f"it holds objects outside {mine}; only the cluster's were deleted")
        return
    s3.delete_bucket(Bucket=b.name)
    ledger.gone("bucket", b.name)


def _delete_versions(s3: Any, bucket: str, prefix: str) -> int:
    """Every object version and delete marker under `prefix`, in batches of 1000 (DeleteObjects' limit)."""
    removed = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        batch = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        for i in range(0, len(batch), 1000):
            answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch[i : i + 1000], "Quiet": True})
            if answer.get("Errors"):
                err = answer["Errors"][0]
                raise ProviderError(f"s3://{bucket}/{err.get('Key')}: cannot delete: {err.get('Code')} {err.get('Message', '')}")
            removed += len(batch[i : i + 1000])
    return removed
