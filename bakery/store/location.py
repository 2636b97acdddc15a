"""Where a cluster's store is: the URL grammar, and the default URL per provider (pure).

    s3://BUCKET[/prefix]      aws    BUCKET: S3's naming rules, without dots (dots break
                                     TLS to virtual-hosted buckets)
    gs://BUCKET[/prefix]      gcp    BUCKET: GCS's naming rules, without dots (dotted names
                                     need a verified domain)
    file:///absolute/folder   local

The prefix is a store key (letters, digits, `._-` parts). Objects live under
`<prefix>/<cluster>/...` (layout.py). Defaults, when `store.url` is not given:

    aws    s3://<cluster>-bakery-<8 hex of sha256("aws/<region>")>
    gcp    gs://<cluster>-bakery-<8 hex of sha256("gcp/<project>")>
    local  file://<build>/<cluster>/store

Bucket names are global: a default already taken by someone else's bucket makes `up`
stop with a line asking for `store.url`. The defaults need no API call, so `bakery
render` (offline) writes the same store URL into the user-data as `up`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bakery.errors import StoreError
from bakery.store.base import check_key

if TYPE_CHECKING:
    from bakery.spec import ClusterSpec

SCHEME_FOR = {"aws": "s3", "gcp": "gs", "local": "file"}
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_GS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$")


def check_url(url: str) -> str:
    """`url` if it follows the grammar above; ValueError saying what is allowed otherwise."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/") or parts.query or parts.fragment:
            raise ValueError(f"{url!r}: a folder store is file:///absolute/folder")
        return url
    if parts.scheme not in ("s3", "gs"):
        raise ValueError(f"{url!r}: the store URL is s3://BUCKET[/prefix], gs://BUCKET[/prefix] or file:///absolute/folder")
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if parts.query or parts.fragment or parts.username or parts.port:
        raise ValueError(f"{url!r}: no query, fragment, user or port in a bucket URL")
    pattern = _S3_BUCKET if parts.scheme == "s3" else _GS_BUCKET
    rules = ("3-63 lowercase letters, digits and '-'" + (" or '_'" if parts.scheme == "gs" else "")
             + ", starting and ending with a letter or digit, no dots")
    if not pattern.match(bucket) or _ip_like(bucket):
        raise ValueError(f"{url!r}: bucket {bucket!r} is not a valid name: {rules}")
    if parts.scheme == "s3" and (bucket.startswith(("xn--", "sthree-")) or bucket.endswith(("-s3alias", "--ol-s3", "--x-s3"))):
        raise ValueError(f"{url!r}: bucket {bucket!r} uses a prefix or suffix S3 reserves")
    if parts.scheme == "gs" and (bucket.startswith("goog") or "google" in bucket):
        raise ValueError(f"{url!r}: bucket {bucket!r}: GCS refuses names that start with 'goog' or contain 'google'")
    if prefix:
        try:
            check_key(prefix)
        except StoreError:
            raise ValueError(f"{url!r}: the prefix {prefix!r} must be '/'-separated parts of letters, digits and '._-'") from None
    return url


# S3's default encryption takes a key id, a key ARN or an alias ARN (not a bare alias name).
# https://docs.aws.amazon.com/AmazonS3/latest/API/API_ServerSideEncryptionByDefault.html
_KMS_KEY = re.compile(r"^((mrk-)?[0-9a-f]{32}|[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}"
                      r"|arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key/[A-Za-z0-9-]+|alias/[A-Za-z0-9/_-]+))$")


def check_kms_key(key: str) -> str:
    if not _KMS_KEY.match(key):
        raise ValueError(f"{key!r}: a KMS key id, key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID) or alias ARN "
                         "(arn:aws:kms:REGION:ACCOUNT:alias/NAME); a bare alias name is not accepted by S3")
    return key


def _ip_like(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
        return True
    except ValueError:
        return False


def default_url(spec: ClusterSpec, build_dir: str | Path = "build") -> str:
    """The store URL when the spec gives none (see the module docstring)."""
    if spec.provider == "aws":
        return f"s3://{spec.name}-bakery-{_short(f'aws/{spec.provider_spec.region}')}"
    if spec.provider == "gcp":
        return f"gs://{spec.name}-bakery-{_short(f'gcp/{spec.provider_spec.project}')}"  # type: ignore[union-attr]
    return f"file://{(Path(build_dir) / spec.name / 'store').resolve()}"


def store_url(spec: ClusterSpec, build_dir: str | Path = "build") -> str:
    """The cluster's store URL: the spec's `store.url`, else the provider's default."""
    return spec.store.url or default_url(spec, build_dir)


def split(url: str) -> tuple[str, str, str]:
    """(scheme, bucket or '', prefix or folder path) of a checked store URL."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return "file", "", parts.path
    return parts.scheme, parts.netloc, parts.path.strip("/")


def provider_problem(spec: ClusterSpec) -> str | None:
    """Why the spec's store URL cannot serve its provider's masters, or None."""
    if not spec.store.url:
        return None
    scheme = urlsplit(spec.store.url).scheme
    want = SCHEME_FOR[spec.provider]
    if scheme != want:
        return (f"the masters of a {spec.provider} cluster read the store with their own credentials: "
                f"use a {want}:// URL, not {scheme}://")
    return None


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]
