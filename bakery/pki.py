"""The cluster's certificates and keys: one unit under build/<cluster>/pki, verified on every load.

Two parts, because the CA material and the leaves will live in different places (the
operator's machine and the state store keep only the CA material; each master issues
its own leaves with keys made there):

- **CA material** (`CAMaterial`): the cluster CA, the etcd CA, the front-proxy CA, the
  service-account key pair and the encryption-at-rest secret. Made once, never replaced.
- **Leaves** of one node, issued from loaded CA material by `issue_node_leaves`.

On disk the PKI is a unit: `ensure` builds every change in memory, and `write` puts
the whole folder in a staging copy and swaps it in at once (bakery.output.write_tree),
`manifest.json` (every file's digest, the CA that signed each leaf) written last. A
folder without a matching manifest is not a PKI. Every load checks each file against
the manifest, each leaf's signature against its CA, its key against its certificate,
and its expiry; a mismatch is a PKIError naming the file and the fix, never repaired
with a new CA. A leaf whose SANs no longer match the plan (the load balancer got its
cloud name) is re-issued with its key and reported in `PKI.changes`; renewal of
expiring leaves is explicit (`ensure(renew_before=...)`, `bakery pki renew`).

ECDSA P-256 by default (microseconds per key); RSA-2048 on request. With `seed`
(golden tests only), keys, serials, signatures and the encryption secret are derived
deterministically so rendered output is byte-identical across machines.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bakery import output
from bakery.errors import PKIError, Problem
from bakery.topology import ClusterPlan, Node, local_host

CA_DAYS = 3650
LEAF_DAYS = 365  # as kubeadm; `bakery pki renew` before they run out
WARN_DAYS = 30  # render warns when a leaf expires within this many days
KEY_MODE = 0o600
CERT_MODE = 0o644
DIR_MODE = 0o700
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
ENCRYPTION_SECRET = "encryption.key"

# RBAC groups (kubeadm 1.29+ model): people's admin certificate is in a group that a
# ClusterRoleBinding makes cluster-admin, so deleting the binding revokes it; the API
# server's kubelet client gets only the kubelet API. system:masters, which no RBAC rule
# can revoke, is held only by the break-glass super-admin.conf on the masters.
ADMIN_GROUP = "bakery:cluster-admins"
KUBELET_CLIENT_GROUP = "bakery:apiserver-kubelet-clients"
SUPER_ADMIN_GROUP = "system:masters"

# Where files land on a master. Manifests and units refer to these names.
NODE_PKI = "/etc/kubernetes/pki"
NODE_ETCD_PKI = "/etc/kubernetes/pki/etcd"
NODE_ENCRYPTION_CONFIG = f"{NODE_PKI}/encryption-config.yaml"
NODE_RBAC_ADDON = "/etc/kubernetes/addons/bakery-rbac.yaml"
NODE_SUPER_ADMIN = "/etc/kubernetes/super-admin.conf"

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Leaf:
    """One certificate to issue: who it is, which CA signs it, what it may do."""

    path: str  # relative to the PKI folder, without extension
    ca: str  # "ca", "etcd/ca" or "front-proxy-ca"
    common_name: str
    organization: str | None = None
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    server: bool = False
    client: bool = False


@dataclass(frozen=True)
class Issued:
    leaf: Leaf
    cert: x509.Certificate
    key: Key


def ca_names(plan: ClusterPlan) -> dict[str, str]:
    """CA path (without extension) -> common name."""
    return {"ca": f"{plan.name}-kubernetes-ca", "etcd/ca": f"{plan.name}-etcd-ca", "front-proxy-ca": "front-proxy-ca"}


@dataclass
class CAMaterial:
    """What signs and what is shared cluster-wide: the CAs, the service-account key pair
    and the encryption-at-rest secret. The only PKI material the operator must keep."""

    certs: dict[str, x509.Certificate]
    keys: dict[str, Key]
    sa_key: Key
    encryption_secret: bytes  # 32 bytes, the secretbox key

    def files(self) -> dict[str, tuple[bytes, int]]:
        out: dict[str, tuple[bytes, int]] = {}
        for rel, cert in self.certs.items():
            out[f"{rel}.crt"] = (_cert_pem(cert), CERT_MODE)
            out[f"{rel}.key"] = (_key_pem(self.keys[rel]), KEY_MODE)
        out["sa.key"] = (_key_pem(self.sa_key), KEY_MODE)
        out["sa.pub"] = (self.sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), CERT_MODE)
        out[ENCRYPTION_SECRET] = (base64.b64encode(self.encryption_secret) + b"\n", KEY_MODE)
        return out


def new_ca_material(plan: ClusterPlan, *, seed: bytes | None = None, now: dt.datetime | None = None) -> CAMaterial:
    issuer = _Issuer(plan.spec.key_algorithm, seed, now)
    keys = {rel: issuer.key(rel) for rel in ca_names(plan)}
    certs = {rel: issuer.ca(keys[rel], cn) for rel, cn in ca_names(plan).items()}
    return CAMaterial(certs, keys, issuer.key("sa"), issuer.secret(ENCRYPTION_SECRET))


# -- which leaves ----------------------------------------------------------------------


def _admin() -> Leaf:
    return Leaf("admin", "ca", "kubernetes-admin", ADMIN_GROUP, client=True)


def operator_leaves(plan: ClusterPlan) -> list[Leaf]:
    """Leaves for people: admin.kubeconfig on the operator's machine."""
    return [_admin()]


def node_leaves(plan: ClusterPlan, node: Node) -> list[Leaf]:
    """Every leaf a master needs. Paths under nodes/<name>/ are its own; the others
    (same names on every master) are kept once in the operator's PKI folder."""
    spec = plan.spec
    domain = spec.network.dns_domain
    api_dns = (
        *plan.lb.dns_names,
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{domain}",
        "localhost",
        *(n.name for n in plan.nodes),
    )
    api_ips = (*plan.lb.ips, *(n.address for n in plan.nodes), plan.service_ip, "127.0.0.1")
    base = f"nodes/{node.name}"
    return [
        Leaf("apiserver", "ca", "kube-apiserver", dns=_unique(api_dns), ips=_unique(api_ips), server=True),
        Leaf("apiserver-kubelet-client", "ca", "kube-apiserver-kubelet-client", KUBELET_CLIENT_GROUP, client=True),
        Leaf("apiserver-etcd-client", "etcd/ca", "kube-apiserver-etcd-client", client=True),
        Leaf("front-proxy-client", "front-proxy-ca", "front-proxy-client", client=True),
        Leaf("etcd/healthcheck-client", "etcd/ca", "kube-etcd-healthcheck-client", client=True),
        Leaf("kube-scheduler", "ca", "system:kube-scheduler", client=True),
        Leaf("kube-controller-manager", "ca", "system:kube-controller-manager", client=True),
        # kubeadm's admin.conf on every control-plane node: bakery-node-register labels the
        # Node with it; the same revocable group as people's
        _admin(),
        # break glass, as kubeadm's super-admin.conf: applies the RBAC addon that makes admin work
        Leaf("super-admin", "ca", "kubernetes-super-admin", SUPER_ADMIN_GROUP, client=True),
        Leaf(f"{base}/etcd-server", "etcd/ca", node.name, dns=(node.name, "localhost"), ips=(node.address, "127.0.0.1"), server=True, client=True),
        Leaf(f"{base}/etcd-peer", "etcd/ca", node.name, dns=(node.name,), ips=_peer_ips(node), server=True, client=True),
        Leaf(f"{base}/kubelet", "ca", f"system:node:{node.name}", "system:nodes", client=True),
    ]


def leaves(plan: ClusterPlan) -> list[Leaf]:
    """Every leaf the plan needs (operator's and every node's, shared ones once), in a fixed order."""
    out = {leaf.path: leaf for leaf in operator_leaves(plan)}
    for n in plan.nodes:
        out.update({leaf.path: leaf for leaf in node_leaves(plan, n) if leaf.path not in out})
    return list(out.values())


def _peer_ips(n: Node) -> tuple[str, ...]:
    """A peer certificate's IPs. etcd checks a peer's source IP against them; members on
    loopback addresses of one host (tests, local development) dial from 127.0.0.1."""
    return (n.address, "127.0.0.1") if ipaddress.ip_address(n.address).is_loopback else (n.address,)


def issue_node_leaves(plan: ClusterPlan, node: Node, cas: CAMaterial, *, key_for: Callable[[Leaf], Key],
                      now: dt.datetime | None = None, seed: bytes | None = None,
                      which: Callable[[Leaf], bool] = lambda leaf: True) -> list[Issued]:
    """Issue the leaves of `node` (those `which` selects) from loaded CA material.
    `key_for(leaf)` gives each leaf's key: an existing one, or one made where this runs."""
    issuer = _Issuer(plan.spec.key_algorithm, seed, now)
    out = []
    for leaf in node_leaves(plan, node):
        if which(leaf):
            key = key_for(leaf)
            out.append(Issued(leaf, issuer.leaf(leaf, key, cas.certs[leaf.ca], cas.keys[leaf.ca]), key))
    return out


# -- the PKI as bakery render uses it --------------------------------------------------


@dataclass
class PKI:
    """The cluster's PKI, verified, held in memory. Read certificates and keys through `read`;
    `path` names where a file is (or will be, after `write`) on disk."""

    folder: Path
    plan: ClusterPlan
    cas: CAMaterial
    files: dict[str, tuple[bytes, int]]  # rel -> (content, mode), manifest excluded
    signed_by: dict[str, str]  # leaf path -> CA path
    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    loaded_from: str | None = None  # the manifest's digest when loaded; None: there was no PKI

    def read(self, rel: str) -> bytes:
        return self.files[rel][0]

    def path(self, rel: str) -> Path:
        return self.folder / rel

    def node_files(self, node: Node) -> list[tuple[str, bytes, int]]:
        """(absolute node path, content, mode) for every PKI file a master needs, its
        kubeconfigs, the encryption-at-rest config and the RBAC addon for the admin group."""
        n = f"nodes/{node.name}"
        pairs = [
            (f"{NODE_PKI}/ca.crt", "ca.crt"),
            # the controller-manager signs kubelet serving/client CSRs with the cluster CA
            (f"{NODE_PKI}/ca.key", "ca.key"),
            (f"{NODE_PKI}/apiserver.crt", "apiserver.crt"),
            (f"{NODE_PKI}/apiserver.key", "apiserver.key"),
            (f"{NODE_PKI}/apiserver-kubelet-client.crt", "apiserver-kubelet-client.crt"),
            (f"{NODE_PKI}/apiserver-kubelet-client.key", "apiserver-kubelet-client.key"),
            (f"{NODE_PKI}/apiserver-etcd-client.crt", "apiserver-etcd-client.crt"),
            (f"{NODE_PKI}/apiserver-etcd-client.key", "apiserver-etcd-client.key"),
            (f"{NODE_PKI}/front-proxy-ca.crt", "front-proxy-ca.crt"),
            (f"{NODE_PKI}/front-proxy-client.crt", "front-proxy-client.crt"),
            (f"{NODE_PKI}/front-proxy-client.key", "front-proxy-client.key"),
            (f"{NODE_PKI}/sa.key", "sa.key"),
            (f"{NODE_PKI}/sa.pub", "sa.pub"),
            (f"{NODE_ETCD_PKI}/ca.crt", "etcd/ca.crt"),
            (f"{NODE_ETCD_PKI}/server.crt", f"{n}/etcd-server.crt"),
            (f"{NODE_ETCD_PKI}/server.key", f"{n}/etcd-server.key"),
            (f"{NODE_ETCD_PKI}/peer.crt", f"{n}/etcd-peer.crt"),
            (f"{NODE_ETCD_PKI}/peer.key", f"{n}/etcd-peer.key"),
            # podmaster and health checks talk to etcd as a client
            (f"{NODE_ETCD_PKI}/healthcheck-client.crt", "etcd/healthcheck-client.crt"),
            (f"{NODE_ETCD_PKI}/healthcheck-client.key", "etcd/healthcheck-client.key"),
        ]
        files = [(dest, *self.files[src]) for dest, src in pairs]
        files.append((NODE_ENCRYPTION_CONFIG, encryption_config(self.cas.encryption_secret), KEY_MODE))
        # each master's own API server (the same host the static pods' flags use)
        local = f"https://{local_host(node)}:{self.plan.lb.port}"
        for user, rel in (("scheduler", "kube-scheduler"), ("controller-manager", "kube-controller-manager"), ("kubelet", f"{n}/kubelet")):
            files.append((f"/etc/kubernetes/{user}.conf", self.kubeconfig(rel, local, user), KEY_MODE))
        files.append((NODE_SUPER_ADMIN, self.kubeconfig("super-admin", local, "super-admin"), KEY_MODE))
        files.append((NODE_RBAC_ADDON, rbac_addon(), 0o600))
        return files

    def kubeconfig(self, rel: str, server: str, user: str) -> bytes:
        """A kubeconfig with the CA and the client certificate/key embedded."""
        b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": self.plan.name, "cluster": {"server": server, "certificate-authority-data": b64(self.read("ca.crt"))}}],
            "users": [{"name": user, "user": {"client-certificate-data": b64(self.read(f"{rel}.crt")), "client-key-data": b64(self.read(f"{rel}.key"))}}],
            "contexts": [{"name": f"{user}@{self.plan.name}", "context": {"cluster": self.plan.name, "user": user}}],
            "current-context": f"{user}@{self.plan.name}",
        }
        return yaml.safe_dump(cfg, sort_keys=False).encode()

    def admin_kubeconfig(self) -> bytes | None:
        """For people: points at the load balancer; None until its address is known (a
        kubeconfig for 127.0.0.1 would reach nothing, or the wrong API server)."""
        server = self.plan.lb.endpoint
        return self.kubeconfig("admin", server, "admin") if server else None


def encryption_config(secret: bytes) -> bytes:
    """The API server's EncryptionConfiguration: new Secrets sealed with secretbox (key1);
    `identity` after it so Secrets written before encryption was on stay readable."""
    cfg = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "EncryptionConfiguration",
        "resources": [{
            "resources": ["secrets"],
            "providers": [
                {"secretbox": {"keys": [{"name": "key1", "secret": base64.b64encode(secret).decode()}]}},
                {"identity": {}},
            ],
        }],
    }
    return yaml.safe_dump(cfg, sort_keys=False).encode()


def rbac_addon() -> bytes:
    """ClusterRoleBindings for bakery's groups, applied on a master with super-admin.conf."""
    def binding(name: str, role: str, group: str) -> dict[str, object]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "bakery"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}],
        }
    docs = [binding(ADMIN_GROUP, "cluster-admin", ADMIN_GROUP),
            binding(KUBELET_CLIENT_GROUP, "system:kubelet-api-admin", KUBELET_CLIENT_GROUP)]
    return yaml.safe_dump_all(docs, sort_keys=False).encode()


# -- ensure, load, write -----------------------------------------------------------------


def ensure(plan: ClusterPlan, folder: str | Path, *, seed: bytes | None = None, now: dt.datetime | None = None,
           renew_before: int | None = None, keep_keys: bool = False, write: bool = True) -> PKI:
    """Load and verify the PKI in `folder` (making CA material only when there is no PKI
    at all), issue the leaves the plan is missing or whose names changed, and with
    `renew_before` re-issue every leaf expiring within that many days (new keys unless
    `keep_keys`). With `write`, changes are swapped into `folder` as one unit.

    Refused (PKIError): a folder that is not a complete PKI, a file that does not match
    the manifest, a leaf its CA did not sign, a key that is not its certificate's, a
    loose key mode, an expired CA, and (unless renewing) an expired leaf."""
    folder = Path(folder)
    issuer = _Issuer(plan.spec.key_algorithm, seed, now)
    loaded = load(plan, folder, now=issuer.now, allow_expired=renew_before is not None)
    if loaded is None:
        cas = new_ca_material(plan, seed=seed, now=issuer.now)
        pki = PKI(folder, plan, cas, cas.files(), {})
        pki.changes += [f"issued {rel}.crt" for rel in cas.certs] + ["issued sa.key", f"issued {ENCRYPTION_SECRET}"]
    else:
        pki = loaded
    for rel, cn in ca_names(plan).items():  # a CA this bakery knows but the manifest predates
        if rel not in pki.cas.certs:
            key = issuer.key(rel)
            pki.cas.certs[rel], pki.cas.keys[rel] = issuer.ca(key, cn), key
            pki.files.update({f"{rel}.crt": (_cert_pem(pki.cas.certs[rel]), CERT_MODE), f"{rel}.key": (_key_pem(key), KEY_MODE)})
            pki.changes.append(f"issued {rel}.crt")

    horizon = issuer.now + dt.timedelta(days=renew_before or 0)
    wanted = {leaf.path: leaf for leaf in leaves(plan)}

    def reason(leaf: Leaf) -> str | None:
        if f"{leaf.path}.crt" not in pki.files or leaf.path not in pki.signed_by:
            return "issued"
        cert = _parse_cert(pki.read(f"{leaf.path}.crt"), pki.path(f"{leaf.path}.crt"))
        if renew_before is not None and cert.not_valid_after_utc <= horizon:
            return "renewed"
        return _mismatch(cert, leaf)

    todo = {path: r for path, leaf in wanted.items() if (r := reason(leaf))}

    def key_for(leaf: Leaf) -> Key:
        rel = f"{leaf.path}.key"
        if rel in pki.files and not (todo[leaf.path] == "renewed" and not keep_keys):
            return _parse_key(pki.read(rel), pki.path(rel))
        return issuer.key(leaf.path)

    issued: list[Issued] = []
    for n in plan.nodes:
        done = {i.leaf.path for i in issued}
        issued += issue_node_leaves(plan, n, pki.cas, key_for=key_for, now=issuer.now, seed=seed,
                                    which=lambda leaf, done=done: leaf.path in todo and leaf.path not in done)
    for leaf in operator_leaves(plan):
        if leaf.path in todo and leaf.path not in {i.leaf.path for i in issued}:  # admin is the nodes' too
            key = key_for(leaf)
            issued.append(Issued(leaf, issuer.leaf(leaf, key, pki.cas.certs[leaf.ca], pki.cas.keys[leaf.ca]), key))
    for i in sorted(issued, key=lambda i: list(wanted).index(i.leaf.path)):
        r = todo[i.leaf.path]
        old_key = pki.files.get(f"{i.leaf.path}.key", (b"", 0))[0]
        kept = old_key == _key_pem(i.key)
        pki.files[f"{i.leaf.path}.crt"] = (_cert_pem(i.cert), CERT_MODE)
        pki.files[f"{i.leaf.path}.key"] = (_key_pem(i.key), KEY_MODE)
        pki.signed_by[i.leaf.path] = i.leaf.ca
        if r == "issued":
            pki.changes.append(f"issued {i.leaf.path}.crt")
        elif r == "renewed":
            until = i.cert.not_valid_after_utc.date().isoformat()
            pki.changes.append(f"renewed {i.leaf.path}.crt until {until} ({'same key' if kept else 'new key'})")
        else:
            pki.changes.append(f"re-issued {i.leaf.path}.crt ({r}); its key is unchanged")
    pki.warnings = _expiry_warnings(pki, issuer.now)
    if write and (pki.changes or loaded is None):
        save(pki)
    return pki


def load(plan: ClusterPlan, folder: str | Path, *, now: dt.datetime | None = None, allow_expired: bool = False) -> PKI | None:
    """The verified PKI in `folder`, or None when there is none (no folder, or an empty one)."""
    folder = Path(folder)
    output.recover_tree(folder)
    try:
        if not folder.is_dir() or not any(folder.iterdir()):
            if folder.exists() and not folder.is_dir():
                raise PKIError(f"{folder}: not a folder; bakery keeps the cluster's PKI there (move it aside)")
            return None
    except PermissionError:
        raise PKIError(f"{folder}: not readable (permission denied)") from None
    now = now or dt.datetime.now(dt.UTC)
    manifest_path = folder / MANIFEST
    broken = (f"move it aside (mv {folder} {folder}.broken) and render again to make a new PKI with new CAs; "
              "masters that run with the old CAs must then be re-rendered and replaced")
    try:
        raw = manifest_path.read_bytes()
        manifest = json.loads(raw)
    except FileNotFoundError:
        raise PKIError(f"{folder}: no {MANIFEST}, so not a complete bakery PKI (an interrupted or older bakery left it); "
                       f"if an older bakery wrote it, `bakery pki adopt` checks every signature and writes the manifest; "
                       f"otherwise {broken}") from None
    except (OSError, ValueError) as e:
        raise PKIError(f"{manifest_path}: unreadable ({e}); {broken}") from None
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION or not isinstance(manifest.get("files"), dict):
        raise PKIError(f"{manifest_path}: not a bakery PKI manifest (version {MANIFEST_VERSION}); {broken}")
    if manifest.get("cluster") != plan.name:
        raise PKIError(f"{manifest_path}: the PKI of cluster {manifest.get('cluster')!r}, not {plan.name!r}")
    files: dict[str, tuple[bytes, int]] = {}
    for rel, digest in sorted(manifest["files"].items()):
        path = folder / rel
        mode = KEY_MODE if rel.endswith(".key") else CERT_MODE
        data = _read(path, mode, broken)
        if _digest(data) != digest:
            raise PKIError(f"{path}: changed since bakery wrote it (its digest is not the one in {manifest_path}); "
                           f"restore it, or {broken}")
        files[rel] = (data, mode)
    cas = _load_cas(plan, folder, files, now, broken)
    signed_by: dict[str, str] = {}
    problems: list[Problem] = []
    for rel, info in sorted(manifest.get("leaves", {}).items()):
        ca_rel = info.get("ca") if isinstance(info, dict) else None
        if ca_rel not in cas.certs or f"{rel}.crt" not in files or f"{rel}.key" not in files:
            raise PKIError(f"{manifest_path}: leaf {rel!r} names no CA or files it holds; {broken}")
        crt_path = folder / f"{rel}.crt"
        cert = _parse_cert(files[f"{rel}.crt"][0], crt_path)
        key = _parse_key(files[f"{rel}.key"][0], folder / f"{rel}.key")
        if info.get("ca_sha256") != _digest(files[f"{ca_rel}.crt"][0]) or not _signed_by(cert, cas.certs[ca_rel]):
            raise PKIError(f"{crt_path}: not signed by {folder / (ca_rel + '.crt')}; {broken}")
        if _public(cert.public_key()) != _public(key.public_key()):
            raise PKIError(f"{folder / (rel + '.key')}: not the key of {crt_path}; {broken}")
        if cert.not_valid_after_utc <= now and not allow_expired:
            problems.append(Problem(f"expired on {cert.not_valid_after_utc:%Y-%m-%d}; renew it with `bakery pki renew` "
                                    "(new keys; --keep-keys to keep them), then render and roll out", file=str(crt_path)))
        signed_by[rel] = ca_rel
    if problems:
        raise PKIError(f"{folder}: expired certificates", problems)
    return PKI(folder, plan, cas, files, signed_by, loaded_from=_digest(raw))


def adopt(plan: ClusterPlan, folder: str | Path) -> PKI:
    """Give a PKI an older bakery wrote (no manifest) its manifest, after checking it as
    strictly as a load does: the cluster and etcd CAs present and self-signed, each leaf
    the plan names signed by its CA and matching its key, keys 0600. CA material that
    bakery did not make then (the front-proxy CA, the encryption secret) is made now.
    Leaves the plan names but the folder lacks are issued by the next render."""
    folder = Path(folder)
    output.recover_tree(folder)
    if (folder / MANIFEST).exists():
        raise PKIError(f"{folder}: already has a {MANIFEST}; nothing to adopt")
    if not folder.is_dir():
        raise PKIError(f"{folder}: no PKI folder to adopt")
    fix = f"this folder is not a complete PKI: move it aside (mv {folder} {folder}.broken) to start a new one"
    files: dict[str, tuple[bytes, int]] = {}
    for rel in sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.suffix in (".crt", ".key", ".pub")):
        files[rel] = (_read(folder / rel, KEY_MODE if rel.endswith(".key") else CERT_MODE, fix), KEY_MODE if rel.endswith(".key") else CERT_MODE)
    issuer = _Issuer(plan.spec.key_algorithm, None, None)
    for rel, cn in ca_names(plan).items():
        if f"{rel}.crt" not in files and f"{rel}.key" not in files and rel == "front-proxy-ca":
            key = issuer.key(rel)
            files[f"{rel}.crt"], files[f"{rel}.key"] = (_cert_pem(issuer.ca(key, cn)), CERT_MODE), (_key_pem(key), KEY_MODE)
    if ENCRYPTION_SECRET not in files:
        files[ENCRYPTION_SECRET] = (base64.b64encode(issuer.secret(ENCRYPTION_SECRET)) + b"\n", KEY_MODE)
    for rel in ("ca.crt", "ca.key", "etcd/ca.crt", "etcd/ca.key", "sa.key", "sa.pub"):
        if rel not in files:
            raise PKIError(f"{folder / rel}: missing; {fix}")
    cas = _load_cas(plan, folder, files, issuer.now, fix)
    signed_by: dict[str, str] = {}
    for leaf in leaves(plan):
        if f"{leaf.path}.crt" not in files:
            continue
        crt_path, key_path = folder / f"{leaf.path}.crt", folder / f"{leaf.path}.key"
        cert = _parse_cert(files[f"{leaf.path}.crt"][0], crt_path)
        if f"{leaf.path}.key" not in files:
            raise PKIError(f"{key_path}: missing; {fix}")
        if not _signed_by(cert, cas.certs[leaf.ca]):
            raise PKIError(f"{crt_path}: not signed by {folder / (leaf.ca + '.crt')}; {fix}")
        if _public(cert.public_key()) != _public(_parse_key(files[f"{leaf.path}.key"][0], key_path).public_key()):
            raise PKIError(f"{key_path}: not the key of {crt_path}; {fix}")
        signed_by[leaf.path] = leaf.ca
    known = {f"{rel}.{ext}" for rel in [*signed_by, *ca_names(plan)] for ext in ("crt", "key")} | {"sa.key", "sa.pub", ENCRYPTION_SECRET}
    pki = PKI(folder, plan, cas, {rel: v for rel, v in files.items() if rel in known}, signed_by)
    pki.changes = [f"adopted {len(signed_by)} leaf certificates signed by their CAs"]
    save(pki)
    return pki


def save(pki: PKI) -> Path:
    """Write the whole PKI into a staging folder beside `pki.folder`, manifest last, and swap it in."""
    (written,) = output.write_trees([tree(pki)])
    saved(pki)
    return written


def tree(pki: PKI) -> output.Tree:
    """The PKI as one output tree (manifest last), for write_trees beside the node trees.
    Its precondition refuses to write when the folder changed since this run loaded it
    (another bakery run); call `saved` once it is written."""
    manifest = {
        "version": MANIFEST_VERSION,
        "cluster": pki.plan.name,
        "files": {rel: _digest(data) for rel, (data, _) in sorted(pki.files.items())},
        "leaves": {rel: {"ca": ca, "ca_sha256": _digest(pki.read(f"{ca}.crt"))} for rel, ca in sorted(pki.signed_by.items())},
    }
    files = [(rel, data, mode) for rel, (data, mode) in sorted(pki.files.items())]
    files.append((MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(), CERT_MODE))

    def unchanged() -> None:
        try:
            now = _digest((pki.folder / MANIFEST).read_bytes())
        except FileNotFoundError:
            now = None
        if now != pki.loaded_from:
            raise PKIError(f"{pki.folder}: changed while this run worked on it (another bakery run?); nothing written, run again")

    return output.Tree(pki.folder, files, DIR_MODE, unchanged)


def saved(pki: PKI) -> None:
    """After `tree(pki)` was written: what is on disk is now what this run holds."""
    pki.loaded_from = _digest((pki.folder / MANIFEST).read_bytes())


def ca_material_files(plan: ClusterPlan) -> dict[str, int]:
    """The files of the CA material (relative path -> mode): what the state store holds
    and every master fetches to issue its own leaves."""
    out = {}
    for rel in ca_names(plan):
        out[f"{rel}.crt"], out[f"{rel}.key"] = CERT_MODE, KEY_MODE
    out.update({"sa.key": KEY_MODE, "sa.pub": CERT_MODE, ENCRYPTION_SECRET: KEY_MODE})
    return out


def ca_material(plan: ClusterPlan, files: dict[str, bytes], where: str, *, now: dt.datetime | None = None) -> CAMaterial:
    """CA material from its files (the store's copy, checked against the description's
    digests), verified as a load verifies it: each CA self-signed by its key, not expired."""
    modes = ca_material_files(plan)
    return _load_cas(plan, Path(where), {rel: (data, modes[rel]) for rel, data in files.items()},
                     now or dt.datetime.now(dt.UTC), "publish the cluster again (`bakery up`)")


def seed(plan: ClusterPlan, folder: str | Path, files: dict[str, bytes], cas: CAMaterial) -> PKI:
    """A PKI in `folder` holding only this CA material, swapped in as a unit; `ensure`
    then issues the leaves. bakery-node's start on a master with no PKI of its own."""
    modes = ca_material_files(plan)
    pki = PKI(Path(folder), plan, cas, {rel: (data, modes[rel]) for rel, data in files.items()}, {})
    save(pki)
    return pki


def _load_cas(plan: ClusterPlan, folder: Path, files: dict[str, tuple[bytes, int]], now: dt.datetime, broken: str) -> CAMaterial:
    certs: dict[str, x509.Certificate] = {}
    keys: dict[str, Key] = {}
    for rel in ca_names(plan):
        have = [f"{rel}.crt" in files, f"{rel}.key" in files]
        if not any(have):
            continue  # made by ensure: a CA this manifest predates
        if not all(have):
            raise PKIError(f"{folder / rel}.crt/.key: the manifest holds only half of this CA; {broken}")
        cert = _parse_cert(files[f"{rel}.crt"][0], folder / f"{rel}.crt")
        key = _parse_key(files[f"{rel}.key"][0], folder / f"{rel}.key")
        if _public(cert.public_key()) != _public(key.public_key()) or not _signed_by(cert, cert):
            raise PKIError(f"{folder / rel}.crt: not a CA signed by {folder / rel}.key; {broken}")
        if cert.not_valid_after_utc <= now:
            raise PKIError(f"{folder / rel}.crt: the CA expired on {cert.not_valid_after_utc:%Y-%m-%d}; a new CA is a new "
                           f"cluster identity: {broken}")
        certs[rel], keys[rel] = cert, key
    for rel in ("sa.key", "sa.pub", ENCRYPTION_SECRET):
        if rel not in files:
            raise PKIError(f"{folder / rel}: missing from the manifest; {broken}")
    sa_key = _parse_key(files["sa.key"][0], folder / "sa.key")
    try:
        secret = base64.b64decode(files[ENCRYPTION_SECRET][0].strip(), validate=True)
    except ValueError:
        secret = b""
    if len(secret) != 32:
        raise PKIError(f"{folder / ENCRYPTION_SECRET}: not a base64 32-byte secret; {broken}")
    return CAMaterial(certs, keys, sa_key, secret)


def _expiry_warnings(pki: PKI, now: dt.datetime) -> list[str]:
    out = []
    for rel in sorted(pki.signed_by):
        cert = _parse_cert(pki.read(f"{rel}.crt"), pki.path(f"{rel}.crt"))
        left = cert.not_valid_after_utc - now
        if left <= dt.timedelta(days=WARN_DAYS):
            out.append(f"{pki.path(rel + '.crt')} expires on {cert.not_valid_after_utc:%Y-%m-%d} (in {max(left.days, 0)} days); "
                       "run `bakery pki renew`, then render and roll out")
    return out


# -- issuing -------------------------------------------------------------------------


class _Issuer:
    def __init__(self, algorithm: str, seed: bytes | None, now: dt.datetime | None) -> None:
        if seed is not None and algorithm != "ecdsa-p256":
            raise PKIError("deterministic PKI (seed) supports ecdsa-p256 only")
        self.algorithm = algorithm
        self.seed = seed
        self.now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)

    def key(self, name: str) -> Key:
        if self.seed is not None:
            digest = hashlib.sha256(self.seed + b"/key/" + name.encode()).digest()
            order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256 group order
            return ec.derive_private_key(int.from_bytes(digest) % (order - 1) + 1, ec.SECP256R1())
        if self.algorithm == "rsa-2048":
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return ec.generate_private_key(ec.SECP256R1())

    def secret(self, name: str) -> bytes:
        if self.seed is not None:
            return hashlib.sha256(self.seed + b"/secret/" + name.encode()).digest()
        return os.urandom(32)

    def serial(self, name: str) -> int:
        if self.seed is not None:
            return int.from_bytes(hashlib.sha256(self.seed + b"/serial/" + name.encode()).digest()[:16]) >> 1
        return x509.random_serial_number()

    def _sign(self, builder: x509.CertificateBuilder, key: Key) -> x509.Certificate:
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return builder.sign(key, hashes.SHA256(), ecdsa_deterministic=self.seed is not None)
        return builder.sign(key, hashes.SHA256())

    def ca(self, key: Key, cn: str) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(self.serial(cn))
            .not_valid_before(self.now - dt.timedelta(hours=1))
            .not_valid_after(self.now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(ski, critical=False)
        )
        return self._sign(builder, key)

    def leaf(self, leaf: Leaf, key: Key, ca_cert: x509.Certificate, ca_key: Key) -> x509.Certificate:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, leaf.common_name)]
        if leaf.organization:
            attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, leaf.organization))
        usages = [u for u, on in ((ExtendedKeyUsageOID.SERVER_AUTH, leaf.server), (ExtendedKeyUsageOID.CLIENT_AUTH, leaf.client)) if on]
        digital_signature, key_encipherment = True, isinstance(key, rsa.RSAPrivateKey)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(self.serial(leaf.path + "|" + ",".join(leaf.dns + leaf.ips) + "|" + self.now.isoformat()))
            .not_valid_before(self.now - dt.timedelta(hours=1))
            .not_valid_after(self.now + dt.timedelta(days=LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature, False, key_encipherment, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if leaf.dns or leaf.ips:
            sans: list[x509.GeneralName] = [x509.DNSName(d) for d in leaf.dns]
            sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in leaf.ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return self._sign(builder, ca_key)


# -- checking what exists ------------------------------------------------------------


def sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    """(DNS names, IP addresses) of a certificate."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return set(ext.get_values_for_type(x509.DNSName)), {str(i) for i in ext.get_values_for_type(x509.IPAddress)}


def _mismatch(cert: x509.Certificate, leaf: Leaf) -> str | None:
    """Why `cert` is not (any more) the certificate the plan wants for `leaf`; None if it is."""
    dns, ips = sans(cert)
    added = sorted((set(leaf.dns) - dns) | (set(leaf.ips) - ips))
    removed = sorted((dns - set(leaf.dns)) | (ips - set(leaf.ips)))
    parts = ([f"SANs added: {', '.join(added)}"] if added else []) + ([f"SANs removed: {', '.join(removed)}"] if removed else [])
    want = [x509.NameAttribute(NameOID.COMMON_NAME, leaf.common_name)]
    if leaf.organization:
        want.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, leaf.organization))
    if cert.subject != x509.Name(want):
        parts.append(f"subject {cert.subject.rfc4514_string()} -> {x509.Name(want).rfc4514_string()}")
    return "; ".join(parts) or None


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _public(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]


# -- bytes and files -------------------------------------------------------------------


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: Key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _read(path: Path, mode: int, broken: str) -> bytes:
    """A PKI file's bytes; a key must be 0600 (refused, as ssh does, rather than used)."""
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode):
            raise PKIError(f"{path}: not a regular file; {broken}")
        if mode == KEY_MODE and stat.S_IMODE(st.st_mode) & 0o077:
            raise PKIError(f"{path}: private key has permissions {stat.S_IMODE(st.st_mode):04o}; bakery uses keys only "
                           f"when they are 0600 (chmod 600 {path})")
        return path.read_bytes()
    except FileNotFoundError:
        raise PKIError(f"{path}: missing (the manifest lists it); restore it, or {broken}") from None
    except OSError as e:
        raise PKIError(f"{path}: unreadable ({e.strerror})") from None


def _parse_key(data: bytes, path: Path) -> Key:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise PKIError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PKIError(f"{path}: not an ECDSA or RSA private key")
    return key


def _parse_cert(data: bytes, path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise PKIError(f"{path}: not a PEM certificate") from None


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
