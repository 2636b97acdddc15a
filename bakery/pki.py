"""The cluster's certificates and keys, kept under build/<cluster>/pki and reused.

`ensure(plan, folder)` loads what exists and issues only what is missing. A leaf
certificate whose SANs no longer match the plan (the load balancer got its cloud
name, a master's address changed) is re-issued with its existing key, and the change
is reported in `PKI.changes`; the CAs and keys are never replaced once written.
Keys are 0600 in a 0700 folder; a key found with looser permissions is refused, as
ssh does, rather than used.

ECDSA P-256 by default (microseconds per key); RSA-2048 on request. With `seed`
(golden tests only), keys, serials and signatures are derived deterministically so
rendered output is byte-identical across machines.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bakery.errors import PKIError
from bakery.output import atomic_write
from bakery.topology import ClusterPlan, Node

CA_DAYS = 3650
LEAF_DAYS = 825
KEY_MODE = 0o600
DIR_MODE = 0o700

# Where files land on a master. Manifests and units refer to these names.
NODE_PKI = "/etc/kubernetes/pki"
NODE_ETCD_PKI = "/etc/kubernetes/pki/etcd"

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Leaf:
    """One certificate to issue: who it is, which CA signs it, what it may do."""

    path: str  # relative to the PKI folder, without extension
    ca: str  # "ca" or "etcd/ca"
    common_name: str
    organization: str | None = None
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    server: bool = False
    client: bool = False


@dataclass
class PKI:
    """The cluster's PKI on disk. Read certificates and keys through `read`."""

    folder: Path
    plan: ClusterPlan
    changes: list[str] = field(default_factory=list)

    def read(self, rel: str) -> bytes:
        return (self.folder / rel).read_bytes()

    def path(self, rel: str) -> Path:
        return self.folder / rel

    def node_files(self, node: Node) -> list[tuple[str, bytes, int]]:
        """(absolute node path, content, mode) for every PKI file a master needs."""
        n = f"nodes/{node.name}"
        pairs = [
            (f"{NODE_PKI}/ca.crt", "ca.crt", 0o644),
            # the controller-manager signs kubelet serving/client CSRs with the cluster CA
            (f"{NODE_PKI}/ca.key", "ca.key", KEY_MODE),
            (f"{NODE_PKI}/apiserver.crt", "apiserver.crt", 0o644),
            (f"{NODE_PKI}/apiserver.key", "apiserver.key", KEY_MODE),
            (f"{NODE_PKI}/apiserver-kubelet-client.crt", "apiserver-kubelet-client.crt", 0o644),
            (f"{NODE_PKI}/apiserver-kubelet-client.key", "apiserver-kubelet-client.key", KEY_MODE),
            (f"{NODE_PKI}/apiserver-etcd-client.crt", "apiserver-etcd-client.crt", 0o644),
            (f"{NODE_PKI}/apiserver-etcd-client.key", "apiserver-etcd-client.key", KEY_MODE),
            (f"{NODE_PKI}/sa.key", "sa.key", KEY_MODE),
            (f"{NODE_PKI}/sa.pub", "sa.pub", 0o644),
            (f"{NODE_ETCD_PKI}/ca.crt", "etcd/ca.crt", 0o644),
            (f"{NODE_ETCD_PKI}/server.crt", f"{n}/etcd-server.crt", 0o644),
            (f"{NODE_ETCD_PKI}/server.key", f"{n}/etcd-server.key", KEY_MODE),
            (f"{NODE_ETCD_PKI}/peer.crt", f"{n}/etcd-peer.crt", 0o644),
            (f"{NODE_ETCD_PKI}/peer.key", f"{n}/etcd-peer.key", KEY_MODE),
            # podmaster and health checks talk to etcd as a client
            (f"{NODE_ETCD_PKI}/healthcheck-client.crt", "etcd/healthcheck-client.crt", 0o644),
            (f"{NODE_ETCD_PKI}/healthcheck-client.key", "etcd/healthcheck-client.key", KEY_MODE),
        ]
        files = [(dest, self.read(src), mode) for dest, src, mode in pairs]
        local = f"https://127.0.0.1:{self.plan.lb.port}"
        for user, rel, server in (
            ("scheduler", "kube-scheduler", local),
            ("controller-manager", "kube-controller-manager", local),
            ("kubelet", f"{n}/kubelet", local),
        ):
            files.append((f"/etc/kubernetes/{user}.conf", self.kubeconfig(rel, server, user), KEY_MODE))
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

    def admin_kubeconfig(self) -> bytes:
        """For people: points at the load balancer (127.0.0.1 until its address is known)."""
        server = self.plan.lb.endpoint or f"https://127.0.0.1:{self.plan.lb.port}"
        return self.kubeconfig("admin", server, "admin")


def leaves(plan: ClusterPlan) -> list[Leaf]:
    """Every leaf certificate the plan needs, in a fixed order."""
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
    out = [
        Leaf("apiserver", "ca", "kube-apiserver", dns=_unique(api_dns), ips=_unique(api_ips), server=True),
        Leaf("apiserver-kubelet-client", "ca", "kube-apiserver-kubelet-client", "system:masters", client=True),
        Leaf("apiserver-etcd-client", "etcd/ca", "kube-apiserver-etcd-client", client=True),
        Leaf("etcd/healthcheck-client", "etcd/ca", "kube-etcd-healthcheck-client", client=True),
        Leaf("admin", "ca", "kubernetes-admin", "system:masters", client=True),
        Leaf("kube-scheduler", "ca", "system:kube-scheduler", client=True),
        Leaf("kube-controller-manager", "ca", "system:kube-controller-manager", client=True),
    ]
    for n in plan.nodes:
        base = f"nodes/{n.name}"
        out += [
            Leaf(f"{base}/etcd-server", "etcd/ca", n.name, dns=(n.name, "localhost"), ips=(n.address, "127.0.0.1"), server=True, client=True),
            Leaf(f"{base}/etcd-peer", "etcd/ca", n.name, dns=(n.name,), ips=_peer_ips(n), server=True, client=True),
            Leaf(f"{base}/kubelet", "ca", f"system:node:{n.name}", "system:nodes", client=True),
        ]
    return out


def _peer_ips(n: Node) -> tuple[str, ...]:
    """A peer certificate's IPs. etcd checks a peer's source IP against them; members on
    loopback addresses of one host (tests, local development) dial from 127.0.0.1."""
    return (n.address, "127.0.0.1") if ipaddress.ip_address(n.address).is_loopback else (n.address,)


def ensure(plan: ClusterPlan, folder: str | Path, *, seed: bytes | None = None, now: dt.datetime | None = None) -> PKI:
    """Load the PKI from `folder`, issuing what is missing or no longer matches the plan."""
    folder = Path(folder)
    issuer = _Issuer(plan.spec.key_algorithm, seed, now)
    pki = PKI(folder, plan)
    _mkdir(folder)
    for ca, cn in (("ca", f"{plan.name}-kubernetes-ca"), ("etcd/ca", f"{plan.name}-etcd-ca")):
        if not (folder / f"{ca}.crt").exists():
            key = _load_or_new_key(folder, ca, issuer, pki)
            _write_cert(folder, ca, issuer.ca(key, cn))
            pki.changes.append(f"issued {ca}.crt")
    if not (folder / "sa.key").exists():
        key = _load_or_new_key(folder, "sa", issuer, pki)
        pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        atomic_write(folder / "sa.pub", pub, 0o644)
    _check_key_mode(folder / "sa.key")
    cas = {ca: (_load_cert(folder / f"{ca}.crt"), _load_key(folder / f"{ca}.key")) for ca in ("ca", "etcd/ca")}
    for leaf in leaves(plan):
        crt_path = folder / f"{leaf.path}.crt"
        ca_cert, ca_key = cas[leaf.ca]
        key = _load_or_new_key(folder, leaf.path, issuer, pki)
        if crt_path.exists():
            current = _load_cert(crt_path)
            if _matches(current, leaf, ca_cert, key):
                continue
            reason = _mismatch(current, leaf)
            pki.changes.append(f"re-issued {leaf.path}.crt ({reason}); its key is unchanged")
        else:
            pki.changes.append(f"issued {leaf.path}.crt")
        _write_cert(folder, leaf.path, issuer.leaf(leaf, key, ca_cert, ca_key))
    return pki


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
            .serial_number(self.serial(leaf.path + "|" + ",".join(leaf.dns + leaf.ips)))
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


def _matches(cert: x509.Certificate, leaf: Leaf, ca: x509.Certificate, key: Key) -> bool:
    dns, ips = sans(cert)
    return (
        dns == set(leaf.dns)
        and ips == set(leaf.ips)
        and cert.issuer == ca.subject
        and cert.public_key().public_numbers() == key.public_key().public_numbers()
        and cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == leaf.common_name
    )


def _mismatch(cert: x509.Certificate, leaf: Leaf) -> str:
    dns, ips = sans(cert)
    added = sorted((set(leaf.dns) - dns) | (set(leaf.ips) - ips))
    removed = sorted((dns - set(leaf.dns)) | (ips - set(leaf.ips)))
    parts = ([f"SANs added: {', '.join(added)}"] if added else []) + ([f"SANs removed: {', '.join(removed)}"] if removed else [])
    return "; ".join(parts) or "issuer or key changed"


# -- files ---------------------------------------------------------------------------


def _mkdir(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, DIR_MODE)


def _check_key_mode(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PKIError(f"{path}: private key has permissions {mode:04o}; bakery uses keys only when they are 0600 (chmod 600 {path})")


def _load_key(path: Path) -> Key:
    _check_key_mode(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise PKIError(f"{path}: not an unencrypted PEM private key") from None
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return key


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        raise PKIError(f"{path}: not a PEM certificate") from None


def _load_or_new_key(folder: Path, rel: str, issuer: _Issuer, pki: PKI) -> Key:
    path = folder / f"{rel}.key"
    if path.exists():
        return _load_key(path)
    key = issuer.key(rel)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _mkdir(path.parent)
    atomic_write(path, pem, KEY_MODE)
    return key


def _write_cert(folder: Path, rel: str, cert: x509.Certificate) -> None:
    atomic_write(folder / f"{rel}.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _unique(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
