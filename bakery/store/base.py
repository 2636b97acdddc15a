"""The store interface and the URL that picks a backend.

Keys are relative to the store's root (the URL's path or prefix), '/'-separated, made
of letters, digits and `._-`; no empty part, no `.` or `..`. Every backend checks them
with `check_key`, so a key can never name something outside the store's root.
"""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from bakery.errors import StoreError

_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
MAX_KEY = 512


@runtime_checkable
class Store(Protocol):
    """get/put/put_if_absent/list/delete on bytes under string keys."""

    url: str

    def get(self, key: str) -> bytes:
        """The object's bytes; StoreNotFound when there is none."""
        ...

    def put(self, key: str, data: bytes) -> None:
        """Create or replace the object, atomically: readers see the old bytes or the new."""
        ...

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create the object only if no object has that key; True if this call created it.
        Of several concurrent callers exactly one gets True."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Every key that starts with `prefix` (a key prefix, not only a folder), sorted."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""
        ...


def check_key(key: str, *, prefix: bool = False) -> str:
    """`key` if it is a valid store key (or, with prefix=True, a valid key prefix: may be
    empty or end with '/'); StoreError naming it otherwise."""
    if not isinstance(key, str) or len(key) > MAX_KEY:
        raise StoreError(f"store key {key!r:.80}: not a string of at most {MAX_KEY} characters")
    if prefix and key == "":
        return key
    # A prefix is a key, or a key and '/': any prefix of a valid part is a valid part.
    body = key[:-1] if prefix and key.endswith("/") else key
    for part in body.split("/"):
        if not _PART.match(part):
            what = "key prefix" if prefix else "key"
            raise StoreError(f"store {what} {key!r}: each '/'-separated part must be letters, digits and '._-', not starting with '.' or '-'")
    return key


def open_store(url: str) -> Store:
    """The backend for `url`: file:///abs/folder, s3://bucket[/prefix], gs://bucket[/prefix]."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        from bakery.store.folder import FolderStore

        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise StoreError(f"store URL {url!r}: a folder store is file:///absolute/path")
        return FolderStore(parts.path)
    if parts.scheme in ("s3", "gs"):
        if not parts.netloc:
            raise StoreError(f"store URL {url!r}: no bucket name ({parts.scheme}://BUCKET[/prefix])")
        prefix = parts.path.strip("/")
        if prefix:
            check_key(prefix)
        if parts.scheme == "s3":
            from bakery.store.s3 import S3Store

            return S3Store(parts.netloc, prefix)
        from bakery.store.gcs import GCSStore

        return GCSStore(parts.netloc, prefix)
    raise StoreError(f"store URL {url!r}: the scheme must be file://, s3:// or gs://")
