"""A real control plane from bakery's render, as processes on loopback addresses.

Every master of a spec with static pods (what the clouds get) is rendered by `bakery
render`. Its etcd, kube-apiserver, kube-controller-manager and kube-scheduler then run
with exactly the commands of the rendered manifests (only the first word, the binary,
becomes the path of the built program), each in the master's own mount namespace:

    unshare --mount: /etc = overlay(<master's files>/etc over the host's /etc, read-only)
                     /var = overlay(<master's files>/var over the host's /var, writes in <state>/var)

so every absolute path in the flags (/etc/kubernetes/pki/..., /var/etcd/data, the audit
log) means what it means on a master, and nothing on the host changes. One holder
process per master keeps the namespace; the components enter it with nsenter (which
execs, so a Proc's PID is the component's own). Masters share the host's network on
distinct 127.x addresses, as the etcd cluster tests do.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from bakery import components, versions
from bakery.etcd import TLS, Client
from tests.conftest import IN_CI, need
from tests.etcd_fixtures import Proc, free_port_on_all, loopback_net

CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
MANIFESTS = "etc/kubernetes/manifests"


def binaries(kubernetes_version: str = versions.DEFAULT_KUBERNETES, etcd_version: str | None = None) -> dict[str, Path]:
    """The real programs of these versions from the machine's cache (built once per machine
    by `bakery binaries`, which `make test` runs first). Under CI a missing one fails."""
    etcd_version = etcd_version or versions.default_etcd(kubernetes_version)
    have = components.cached(components.ALL, kubernetes_version, etcd_version)
    missing = [c for c, p in have.items() if p is None]
    if missing and IN_CI:
        # CI builds what is missing rather than fail on a cold machine: `make test` already
        # ran `bakery binaries`, so this only happens for a version the Makefile does not list
        have.update(components.obtain(missing, kubernetes_version, etcd_version, progress=lambda line: print(line, file=sys.stderr)))
        missing = []
    need(f"the Kubernetes {kubernetes_version} / etcd {etcd_version} binaries ({', '.join(missing)})", not missing,
         f"bakery binaries --kubernetes-version {kubernetes_version}")
    return {c: p for c, p in have.items() if p is not None}


def bakery(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "bakery.cli", *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"bakery {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr[-3000:]}"
    return r


def pod_command(manifest: Path) -> list[str]:
    pod = yaml.safe_load(manifest.read_text())
    (container,) = pod["spec"]["containers"]
    return [str(a) for a in container["command"]]


class Master:
    """One master's mount namespace and the components started in it."""

    def __init__(self, cluster: ControlPlane, index: int) -> None:
        self.cluster = cluster
        self.name = cluster.names[index]
        self.address = cluster.addresses[index]
        self.files = cluster.build / cluster.name / "nodes" / self.name / "files"
        self.state = cluster.folder / "state" / self.name
        self.procs: dict[str, Proc] = {}
        self.holder: Proc | None = None

    @property
    def var(self) -> Path:
        """What the master wrote under /var (etcd's data, the audit log)."""
        return self.state / "var-upper"

    def enter(self) -> None:
        up, work, etc_empty = self.state / "var-upper", self.state / "var-work", self.state / "etc-none"
        for d in (up, work, etc_empty):
            d.mkdir(parents=True, exist_ok=True)
        script = (
            f"mount -t overlay overlay -o lowerdir={self.files}/etc:/etc /etc && "
            f"mount -t overlay overlay -o lowerdir=/var,upperdir={up},workdir={work} /var && "
            f"cp -a {self.files}/var/. /var/ && echo ready && exec sleep 86400"
        )
        self.holder = Proc(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                           self.state / "holder.log")
        deadline = time.monotonic() + 20
        while "ready" not in self.holder.tail() and time.monotonic() < deadline and self.holder.alive():
            time.sleep(0.1)
        assert "ready" in self.holder.tail(), f"{self.name}: namespace holder failed:\n{self.holder.tail()}"

    def argv(self, component: str) -> list[str]:
        folder = self.files / MANIFESTS
        command = pod_command(folder / f"{component}.manifest")
        return [str(self.cluster.bins[command[0]]), *command[1:]]

    def start(self, component: str, argv: Sequence[str] | None = None) -> Proc:
        assert self.holder is not None and self.holder.alive()
        argv = list(argv or self.argv(component))
        proc = Proc(["nsenter", f"--target={self.holder.pid}", "--mount", "--", *argv], self.cluster.folder / "logs" / f"{self.name}-{component}.log")
        self.procs[component] = proc
        return proc

    def stop(self) -> None:
        for p in self.procs.values():
            p.stop()
        if self.holder is not None:
            self.holder.stop()


class ControlPlane:
    """A spec rendered by bakery with masters on loopback addresses, and its real components."""

    def __init__(self, folder: Path, masters: int = 3, kubernetes_version: str = versions.DEFAULT_KUBERNETES,
                 extra: str = "") -> None:
        self.folder = folder
        self.kubernetes_version = kubernetes_version
        self.bins = binaries(kubernetes_version)
        self.name = "cp"
        prefix = loopback_net()
        self.addresses = [f"{prefix}{11 + i}" for i in range(masters)]
        fixed = [2381, 10248, 10250, 10257, 10259]
        self.client_port = free_port_on_all(self.addresses, avoid=fixed)
        self.peer_port = free_port_on_all(self.addresses, avoid=[*fixed, self.client_port])
        self.api_port = free_port_on_all(self.addresses, avoid=[*fixed, self.client_port, self.peer_port])
        folder.mkdir(parents=True, exist_ok=True)
        self.build = folder / "build"
        self.spec_file = folder / "cluster.yaml"
        self.spec_file.write_text("\n".join([
            f"name: {self.name}", "provider: local", f"masters: {masters}", f'kubernetes_version: "{kubernetes_version}"',
            "runtime: static-pods", "election: builtin",
            "network:", f"  subnet: {prefix}0/24", f"  addresses: [{', '.join(self.addresses)}]",
            "etcd:", "  bootstrap: static", f"  client_port: {self.client_port}", f"  peer_port: {self.peer_port}",
            # no load balancer in front here: master 0 stands for it in the admin kubeconfig
            "load_balancer:", f"  port: {self.api_port}", f"  ip: {self.addresses[0]}",
        ]) + "\n" + extra)  # fmt: skip
        self.names = [f"{self.name}-master-{i}" for i in range(masters)]
        self.masters = [Master(self, i) for i in range(masters)]
        self.etcd_urls = [f"https://{a}:{self.client_port}" for a in self.addresses]
        self.api_urls = [f"https://{a}:{self.api_port}" for a in self.addresses]

    def render(self) -> None:
        bakery("render", "-f", str(self.spec_file), "-o", str(self.build))

    @property
    def admin_kubeconfig(self) -> Path:
        return self.build / self.name / "admin.kubeconfig"

    def node_file(self, master: int, path: str) -> Path:
        return self.masters[master].files / path.lstrip("/")

    def etcd_client(self) -> Client:
        pki = self.node_file(0, "/etc/kubernetes/pki/etcd")
        return Client(self.etcd_urls, TLS(pki / "ca.crt", pki / "healthcheck-client.crt", pki / "healthcheck-client.key"))

    def start(self, components_: Sequence[str] = ("etcd", *CONTROL_PLANE)) -> None:
        for m in self.masters:
            m.enter()
        for component in components_:
            for m in self.masters:
                m.start(component)

    def kubectl(self, *args: str, kubeconfig: Path | None = None, server: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bins["kubectl"]), f"--kubeconfig={kubeconfig or self.admin_kubeconfig}",
                f"--server={server or self.api_urls[0]}", "--request-timeout=20s", *args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check:
            assert r.returncode == 0, f"kubectl {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
        return r

    def wait_ready(self, within: float = 240) -> None:
        """Every API server answers /readyz with ok (bounded)."""
        deadline = time.monotonic() + within
        pending = list(self.api_urls)
        while pending and time.monotonic() < deadline:
            for url in list(pending):
                r = self.kubectl("get", "--raw=/readyz", server=url, check=False, timeout=30)
                if r.returncode == 0 and r.stdout.strip() == "ok":
                    pending.remove(url)
            if pending:
                time.sleep(1)
        logs = "\n".join(f"--- {m.name} {c}\n{p.tail(15)}" for m in self.masters for c, p in m.procs.items())
        assert not pending, f"not ready within {within} s: {pending}\n{logs}"

    def register(self, master: int = 0) -> subprocess.CompletedProcess[str]:
        """Run master's rendered bakery-node-register script (as its timer does), in its
        namespace, with the built kubectl on PATH: it applies bakery's RBAC addon."""
        m = self.masters[master]
        assert m.holder is not None
        script = m.files / "usr/local/sbin/bakery-node-register"
        env = {"PATH": f"{self.bins['kubectl'].parent}:/usr/sbin:/usr/bin:/sbin:/bin"}
        return subprocess.run(["nsenter", f"--target={m.holder.pid}", "--mount", "--", "sh", str(script)],
                              capture_output=True, text=True, timeout=120, env=env)

    def lease_holder(self, name: str) -> str:
        r = self.kubectl("get", "lease", "-n", "kube-system", name, "-o", "json")
        return json.loads(r.stdout)["spec"].get("holderIdentity", "")

    def stop(self) -> None:
        for m in self.masters:
            m.stop()
