"""Upload what changed: the operator's side of the store (`bakery up` puts the CA material
and the cluster description with it).

    result = upload(store, {layout.description("prod"): data, layout.pki("prod", "ca.crt"): crt, ...})

One listing of the keys' common prefix, then, for each key that exists, its bytes
compared by SHA-256 with ours; only missing or different objects are put. Keys not in
the mapping are never touched (nothing is ever deleted here): objects the nodes wrote,
or an older description, stay.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from bakery.errors import StoreNotFound
from bakery.store.base import Store, check_key


@dataclass
class Uploaded:
    written: list[str] = field(default_factory=list)  # created or replaced
    unchanged: list[str] = field(default_factory=list)


def upload(store: Store, objects: Mapping[str, bytes]) -> Uploaded:
    """Put each object whose stored bytes differ from (or lack) `objects[key]`."""
    keys = sorted(check_key(k) for k in objects)
    out = Uploaded()
    if not keys:
        return out
    listed = set(store.list(_folder(keys)))
    for key in keys:
        data = objects[key]
        if key in listed:
            try:
                same = _digest(store.get(key)) == _digest(data)
            except StoreNotFound:  # deleted between the listing and the read
                same = False
            if same:
                out.unchanged.append(key)
                continue
        store.put(key, data)
        out.written.append(key)
    return out


def _folder(keys: list[str]) -> str:
    """The longest '/'-ended prefix all keys share ('' if none)."""
    folders = [k.split("/")[:-1] for k in keys]
    common: list[str] = []
    for parts in zip(*folders, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return "".join(f"{p}/" for p in common)


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
