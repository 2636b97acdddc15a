"""The cluster description: what the operator publishes to the store and every master
renders from. Frozen, canonical JSON; its sha256 digest goes into the small user-data,
so a node renders exactly what the operator published and refuses anything else.

    {"bakery_description": 1, "cluster": ..., "spec": {...}, "lb": {...},
     "bootstrap": {...}, "pki": {"ca.crt": "sha256:...", ...}}

`pki` lists the CA material (never a leaf: nodes issue their own) with each object's
digest, so a corrupted or swapped CA object is refused before anything is written.
`publish` (operator side) uploads the CA material and the description, description
last, so a node never sees a description whose CA objects are not there yet; `fetch`
(node side) reads and checks them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bakery import pki as pki_mod
from bakery import spec as spec_mod
from bakery import topology
from bakery.discovery import Bootstrap
from bakery.errors import NodeError, SpecError, StoreNotFound
from bakery.node.identity import read_capped
from bakery.providers.base import LBAddress
from bakery.store import Store, layout, sync

VERSION = 1
MAX_DESCRIPTION = 1024 * 1024
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")

CONFIG = Path("/etc/bakery/node.json")
MAX_CONFIG = 4096


@dataclass(frozen=True)
class NodeConfig:
    """/etc/bakery/node.json, the small user-data's one file: no secret in it."""

    cluster: str
    store: str
    digest: str

    def to_json(self) -> str:
        return json.dumps({"cluster": self.cluster, "store": self.store, "digest": self.digest}, sort_keys=True)

    @classmethod
    def load(cls, path: str | Path = CONFIG) -> NodeConfig:
        path = Path(path)
        return cls.load_text(read_capped(path, MAX_CONFIG, "the node config the user-data writes"), str(path))

    @classmethod
    def load_text(cls, raw: str | bytes, where: str = "node config") -> NodeConfig:
        try:
            doc = json.loads(raw)
            cfg = cls(str(doc["cluster"]), str(doc["store"]), str(doc["digest"]))
        except (ValueError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise NodeError(f"{where}: not a bakery node config ({{cluster, store, digest}}): {e}") from None
        if not re.fullmatch(r"[a-z]([a-z0-9-]{0,30}[a-z0-9])?", cfg.cluster):
            raise NodeError(f"{where}: cluster {cfg.cluster!r:.40} is not a cluster name")
        return cfg


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Description:
    cluster: str
    spec: spec_mod.ClusterSpec
    lb: LBAddress
    bootstrap: Bootstrap
    pki: Mapping[str, str]  # rel path -> digest
    digest: str


def encode(spec: spec_mod.ClusterSpec, lb: LBAddress, bootstrap: Bootstrap, pki_digests: Mapping[str, str]) -> bytes:
    doc = {
        "bakery_description": VERSION,
        "cluster": spec.name,
        "spec": spec.model_dump(mode="json"),
        "lb": {"dns_names": list(lb.dns_names), "ips": list(lb.ips)},
        "bootstrap": {
            "mode": bootstrap.mode,
            "discovery_url": bootstrap.discovery_url,
            "discovery_token": bootstrap.discovery_token,
            "discovery_endpoints": list(bootstrap.discovery_endpoints),
            "srv_domain": bootstrap.srv_domain,
        },
        "pki": dict(sorted(pki_digests.items())),
    }
    return (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()


def decode(data: bytes, where: str, expected: str | None = None) -> Description:
    """The description in `data`; NodeError naming `where` when it is not one, or when
    its digest is not `expected`."""
    actual = digest(data)
    if expected is not None and actual != expected:
        raise NodeError(f"{where}: digest {actual} is not {expected}, the one this master's user-data names "
                        "(the object was changed or corrupted in the store)")
    if len(data) > MAX_DESCRIPTION:
        raise NodeError(f"{where}: larger than {MAX_DESCRIPTION} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise NodeError(f"{where}: not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("bakery_description") != VERSION:
        raise NodeError(f"{where}: not a version-{VERSION} bakery cluster description")
    try:
        parsed = spec_mod.parse(json.dumps(doc["spec"], indent=1), where)
        lb, boot, pki = doc["lb"], doc["bootstrap"], doc["pki"]
        bootstrap = Bootstrap(
            mode=boot["mode"],
            discovery_url=boot["discovery_url"],
            discovery_token=boot["discovery_token"],
            discovery_endpoints=tuple(boot["discovery_endpoints"]),
            srv_domain=boot["srv_domain"],
        )
        address = LBAddress(tuple(lb["dns_names"]), tuple(lb["ips"]))
    except SpecError as e:
        raise NodeError(f"{where}: the spec inside does not validate: {e.lines()[0]}") from None
    except (KeyError, TypeError) as e:
        raise NodeError(f"{where}: malformed description (missing or wrong {e})") from None
    if doc.get("cluster") != parsed.name:
        raise NodeError(f"{where}: names cluster {doc.get('cluster')!r:.40} but its spec is {parsed.name!r}")
    wanted = ca_files(parsed)
    if not isinstance(pki, dict) or set(pki) != set(wanted) or not all(DIGEST_RE.match(str(v)) for v in pki.values()):
        raise NodeError(f"{where}: 'pki' must list exactly {', '.join(wanted)} with sha256 digests")
    return Description(parsed.name, parsed, address, bootstrap, dict(pki), actual)


def ca_files(spec: spec_mod.ClusterSpec) -> dict[str, int]:
    """The CA material's files (relative path -> mode) for this spec."""
    return pki_mod.ca_material_files(topology.plan(spec))


# -- operator side -------------------------------------------------------------------------


def document(spec: spec_mod.ClusterSpec, lb: LBAddress, bootstrap: Bootstrap, keys: pki_mod.PKI) -> tuple[bytes, dict[str, bytes]]:
    """The description's bytes and the CA material's files it lists (pure: the digest in
    the small user-data is computed from this before anything is uploaded)."""
    files = {rel: keys.read(rel) for rel in ca_files(spec)}
    return encode(spec, lb, bootstrap, {rel: digest(data) for rel, data in files.items()}), files


def publish(store: Store, spec: spec_mod.ClusterSpec, lb: LBAddress, bootstrap: Bootstrap, keys: pki_mod.PKI) -> tuple[str, list[str]]:
    """Upload the CA material and the description; return (digest, keys written). Only
    objects whose bytes changed are written and nothing is deleted. The description goes
    up after the CA material, and the `cluster.json` pointer last, so a node never sees a
    description whose CA objects are not there yet."""
    desc, files = document(spec, lb, bootstrap, keys)
    d = digest(desc)
    ca = {layout.pki(spec.name, rel): data for rel, data in files.items()}
    written = list(sync.upload(store, ca).written)
    written += sync.upload(store, {layout.description_by_digest(spec.name, d): desc}).written
    written += sync.upload(store, {layout.description(spec.name): desc}).written
    return d, written


# -- node side -----------------------------------------------------------------------------


def fetch(store: Store, cluster: str, expected: str) -> Description:
    """The description the user-data names, checked against its digest."""
    if not DIGEST_RE.match(expected):
        raise NodeError(f"user-data digest {expected!r:.80} is not sha256:<64 hex digits>")
    key = layout.description_by_digest(cluster, expected)
    try:
        data = store.get(key)
    except StoreNotFound:
        raise NodeError(f"{store.url}/{key}: missing; was the cluster published (`bakery up`) with this spec?") from None
    return decode(data, f"{store.url}/{key}", expected)


def fetch_ca_material(store: Store, desc: Description) -> dict[str, bytes]:
    """The CA material's files, each checked against the description's digest; nothing
    is written (a mismatch anywhere leaves the node as it was)."""
    fetched: dict[str, bytes] = {}
    for rel, want in desc.pki.items():
        key = layout.pki(desc.cluster, rel)
        try:
            data = store.get(key)
        except StoreNotFound:
            raise NodeError(f"{store.url}/{key}: missing CA object the description lists") from None
        if digest(data) != want:
            raise NodeError(f"{store.url}/{key}: digest {digest(data)} is not {want}, the one the description lists")
        fetched[rel] = data
    return fetched


def describe(doc: Description) -> dict[str, Any]:
    """A short summary for logs (never key material)."""
    return {"cluster": doc.cluster, "digest": doc.digest, "masters": doc.spec.masters, "bootstrap": doc.bootstrap.mode}
