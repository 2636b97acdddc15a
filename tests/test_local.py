"""The local provider's pieces, each against the real program it drives: haproxy,
cloud-localds, Debian's etcd 3.4 (discovery), QEMU (the hub and the KVM probe),
real processes for PID files. No VM boots here: tests/test_e2e.py does that.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from bakery import apiserver, pki, topology
from bakery import spec as spec_mod
from bakery.errors import ProviderError
from bakery.providers.base import no_progress
from bakery.providers.local import console, discovery, lb, proc, seed, ssh, vm
from bakery.providers.local.net import (
    HOST,
    free_port_base,
    is_listening,
    listening_ports,
    mac,
    net_plan,
)
from bakery.providers.local.provider import LocalProvider
from bakery.state import paths as cluster_paths
from tests.conftest import need, need_binary


def _free_base() -> int:
    base = free_port_base(31000)
    if base is None:
        raise AssertionError("no free port range")
    return base


def _spec(text: str = "", base: int = 22000) -> spec_mod.ClusterSpec:
    return spec_mod.parse(f"name: lt\nprovider: local\nruntime: systemd\nuser_data: embedded\nlocal: {{runtime: vm, port_base: {base}}}\n{text}")


@pytest.fixture
def started():
    """PID files of processes a test started; each is stopped by PID at the end."""
    pidfiles: list[Path] = []
    yield pidfiles
    for p in pidfiles:
        proc.stop(p, timeout=5)


# -- net: ports, addresses, MACs ---------------------------------------------------------


def test_net_plan_ports_addresses_and_macs_are_deterministic_and_distinct():
    s = _spec(base=23000)
    plan = topology.plan(s)
    net = net_plan(s, plan)
    assert net.lb_port == 23000 and net.discovery_port == 23001
    assert [n.address for n in net.nodes] == ["10.240.0.10", "10.240.0.11", "10.240.0.12"]
    assert [n.hub_port for n in net.nodes] == [23010, 23011, 23012]
    assert [n.ssh_port for n in net.nodes] == [23030, 23031, 23032]
    assert [n.etcd_port for n in net.nodes] == [23050, 23051, 23052]
    assert len(set(net.host_ports)) == len(net.host_ports)
    macs = [m for n in net.nodes for m in (n.private_mac, n.user_mac)]
    assert len(set(macs)) == 6
    for m in macs:
        first = int(m.split(":")[0], 16)
        assert first & 0b10 and not first & 0b1  # locally administered, unicast
    assert net_plan(s, plan) == net  # pure
    assert mac("a", "b", "private") != mac("a2", "b", "private")


def test_listening_ports_reads_proc_without_connecting():
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert (HOST, port) in listening_ports()
        assert is_listening(port)
    assert not is_listening(port)


# -- vm: the QEMU command lines -------------------------------------------------------


def test_node_argv_direct_kernel_boot_two_nics_and_discovery_forward(tmp_path):
    s = _spec(base=23000)
    plan = topology.plan(s)
    net = net_plan(s, plan)
    n = net.nodes[1]
    files = vm.NodeFiles(tmp_path / n.name)
    boot = vm.Boot(tmp_path / "disk.qcow2", tmp_path / "vmlinuz", tmp_path / "initrd.img")
    argv = vm.node_argv("lt", n, files, boot, net, memory_mb=768, cpus=1, accel="tcg", python="/py")
    joined = " ".join(argv)
    assert argv[0] == "qemu-system-x86_64"
    assert argv[argv.index("-name") + 1] == vm.marker("lt", n.name)
    assert argv[argv.index("-cpu") + 1] == "qemu64"
    assert argv[argv.index("-append") + 1] == "root=/dev/vda rw console=ttyS0,115200 net.ifnames=0"
    assert f"socket,id=private,connect=127.0.0.1:{n.hub_port}" in argv
    user = argv[argv.index("-netdev", argv.index("-netdev") + 1) + 1]
    assert user.startswith("user,id=host,restrict=on,ipv6=off,")
    assert f"hostfwd=tcp:127.0.0.1:{n.ssh_port}-{n.address}:22" in user
    assert f"hostfwd=tcp:127.0.0.1:{n.etcd_port}-{n.address}:2379" in user
    assert "guestfwd" not in joined
    assert argv[argv.index("-serial") + 1] == f"file:{files.console}"
    kvm = vm.node_argv("lt", n, files, boot, net, memory_mb=1024, cpus=2, accel="kvm", discovery=True, python="/py")
    assert kvm[kvm.index("-cpu") + 1] == "host" and kvm[kvm.index("-m") + 1] == "1024"
    assert any(f"guestfwd=tcp:10.0.2.100:2379-cmd:/py -m bakery.providers.local.relay 127.0.0.1 {net.discovery_port}" in a
               for a in kvm)


def test_qemu_option_values_escape_commas(tmp_path):
    s = _spec()
    net = net_plan(s, topology.plan(s))
    files = vm.NodeFiles(tmp_path / "a,b")
    boot = vm.Boot(tmp_path / "d.qcow2", tmp_path / "k", tmp_path / "i")
    argv = vm.node_argv("lt", net.nodes[0], files, boot, net, memory_mb=512, cpus=1, accel="tcg")
    assert f"file={tmp_path}/a,,b/disk.qcow2,if=virtio,format=qcow2" in argv


def test_hub_listens_on_every_node_port(tmp_path, started):
    need_binary("qemu-system-x86_64")
    s = _spec(base=_free_base())
    net = net_plan(s, topology.plan(s))
    pidfile = tmp_path / "hub.pid"
    started.append(pidfile)
    proc.start(vm.hub_argv("lt", net), pidfile=pidfile, marker=vm.hub_marker("lt"), log=tmp_path / "hub.log")
    deadline = time.monotonic() + 20
    while not all(is_listening(n.hub_port) for n in net.nodes):
        assert proc.running(pidfile), (tmp_path / "hub.log").read_text()
        assert time.monotonic() < deadline, "hub did not listen"
        time.sleep(0.1)
    proc.stop(pidfile)
    assert not any(is_listening(n.hub_port) for n in net.nodes)


def test_accelerator_override_and_probe(tmp_path, monkeypatch):
    need_binary("qemu-system-x86_64")
    monkeypatch.setenv("BAKERY_QEMU_ACCEL", "tcg")
    assert vm.accelerator(tmp_path) == "tcg"
    monkeypatch.delenv("BAKERY_QEMU_ACCEL")
    # the probe boots a real 512-byte guest; whatever it finds, it leaves nothing behind
    assert vm.accelerator(tmp_path) in ("kvm", "tcg")
    assert not (tmp_path / "kvm-probe.img").exists()


# -- seed: NoCloud documents and the real cloud-localds ---------------------------------


def test_seed_documents_and_iso(tmp_path):
    binary = need_binary("cloud-localds", "make setup-system (cloud-image-utils)")
    s = _spec()
    n = net_plan(s, topology.plan(s)).nodes[0]
    ud = b"#cloud-config\nhostname: lt-master-0\n"
    meta = yaml.safe_load(seed.meta_data("lt", n, ud))
    assert meta["local-hostname"] == "lt-master-0"
    assert meta["instance-id"].startswith("lt-lt-master-0-")
    assert meta["instance-id"] != yaml.safe_load(seed.meta_data("lt", n, ud + b"# changed\n"))["instance-id"]
    netcfg = yaml.safe_load(seed.network_config(n))
    assert netcfg["version"] == 2
    eths = netcfg["ethernets"]
    assert eths["private"] == {"match": {"macaddress": n.private_mac}, "addresses": ["10.240.0.10/24"]}
    assert eths["host"] == {"match": {"macaddress": n.user_mac}, "addresses": ["10.0.2.15/24"]}
    vendor = seed.vendor_data("ssh-ed25519 AAAA test")
    assert vendor.startswith(b"#cloud-config\n")
    doc = yaml.safe_load(vendor)
    assert doc["disable_root"] is False and doc["ssh_authorized_keys"] == ["ssh-ed25519 AAAA test"]
    assert doc["grub_dpkg"] == {"enabled": False}
    assert binary
    iso = seed.build(tmp_path, tmp_path / "seed.iso", user_data=ud, meta=seed.meta_data("lt", n, ud),
                     network=seed.network_config(n), vendor=vendor)
    data = iso.read_bytes()
    assert data[0x8001:0x8006] == b"CD001"  # iso9660
    assert b"CIDATA" in data.upper()[:0x10000]
    for name in ("user-data", "meta-data", "network-config", "vendor-data"):
        assert (tmp_path / name).exists()
    assert (iso.stat().st_mode & 0o777) == 0o600 and ((tmp_path / "user-data").stat().st_mode & 0o777) == 0o600


def test_vendor_data_is_valid_cloud_config(tmp_path):
    binary = need_binary("cloud-init", "make setup-system (cloud-init)")
    path = tmp_path / "vendor-data"
    path.write_bytes(seed.vendor_data("ssh-ed25519 AAAA test"))
    r = subprocess.run([binary, "schema", "--config-file", str(path)], capture_output=True, text=True)
    assert r.returncode == 0 and "Valid cloud-config" in r.stdout, r.stdout + r.stderr


def test_seed_network_config_renders_with_cloud_inits_networkd_renderer(tmp_path):
    need_binary("cloud-init", "make setup-system (cloud-init)")
    s = _spec()
    n = net_plan(s, topology.plan(s)).nodes[2]
    path = tmp_path / "network-config"
    path.write_bytes(seed.network_config(n))
    r = subprocess.run(["cloud-init", "devel", "net-convert", "-p", str(path), "-k", "yaml", "-d", str(tmp_path / "out"),
                        "-D", "debian", "-O", "networkd"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rendered = "".join(p.read_text() for p in (tmp_path / "out").rglob("*.network"))
    assert "Address=10.240.0.12/24" in rendered and "Address=10.0.2.15/24" in rendered
    assert "Gateway" not in rendered


# -- lb: haproxy.cfg checked and run by the real haproxy ---------------------------------


def _https(address: tuple[str, int], cert: Path, key: Path, status: int, body: bytes) -> ThreadingHTTPServer:
    """An HTTPS server on `address` answering every GET with `status` and `body`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(address, Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_haproxy_checks_etcd_by_connect_and_api_servers_by_a_verified_readyz(tmp_path, started):
    """The real haproxy: a dead etcd backend is DOWN and costs no request; of three API
    servers, the one not ready (HTTP 500 from /readyz) and the one whose certificate the
    cluster CA did not sign are DOWN, and every request through the API port reaches the
    ready one."""
    binary = need_binary("haproxy")
    base = _free_base()
    s = _spec(base=base)
    plan = topology.plan(s, lb_ips=(HOST,))
    net = net_plan(s, plan)
    ours, foreign = pki.ensure(plan, tmp_path / "pki"), pki.ensure(plan, tmp_path / "foreign")
    sock = tmp_path / "stats.sock"
    cfg = tmp_path / "haproxy.cfg"
    ca = ours.path("ca.crt")
    cfg.write_text(lb.config("lt", net, sock, ca))
    check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    text = cfg.read_text()
    assert "option redispatch" in text and "retries 3" in text and "option tcp-check" in text
    # etcd: two live backends that answer "hello", one dead
    servers = []
    for n in net.nodes[:2]:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((HOST, n.etcd_port))
        srv.listen(16)
        servers.append(srv)
        threading.Thread(target=_answer, args=(srv,), daemon=True).start()
    # API servers: ready, not ready, ready but signed by another CA
    n0, n1, n2 = net.nodes
    not_ready = b"[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n"
    apis = [_https((HOST, n0.api_port), ours.path("apiserver.crt"), ours.path("apiserver.key"), 200, b"ok"),
            _https((HOST, n1.api_port), ours.path("apiserver.crt"), ours.path("apiserver.key"), 500, not_ready),
            _https((HOST, n2.api_port), foreign.path("apiserver.crt"), foreign.path("apiserver.key"), 200, b"ok")]
    pidfile = tmp_path / "haproxy.pid"
    started.append(pidfile)
    proc.start(lb.argv(cfg), pidfile=pidfile, marker=str(cfg), log=tmp_path / "haproxy.log")
    try:
        deadline = time.monotonic() + 20
        states: dict[str, str] = {}
        api_states: dict[str, str] = {}
        while time.monotonic() < deadline:
            if sock.exists():
                states = lb.server_states(sock)
                api_states = lb.server_states(sock, backend=lb.API_BACKEND)
                if (states.get("lt-master-2", "").startswith("DOWN") and states.get("lt-master-0", "").startswith("UP")
                        and api_states.get("lt-master-0", "").startswith("UP")
                        and all(api_states.get(f"lt-master-{i}", "").startswith("DOWN") for i in (1, 2))):
                    break
            time.sleep(0.2)
        assert set(states) == {"lt-master-0", "lt-master-1", "lt-master-2"}
        assert states["lt-master-2"].startswith("DOWN") and states["lt-master-1"].startswith("UP")
        assert api_states["lt-master-0"].startswith("UP"), api_states
        assert api_states["lt-master-1"].startswith("DOWN") and api_states["lt-master-2"].startswith("DOWN"), api_states
        # every request through the LB succeeds despite the dead backend (redispatch + retries)
        for _ in range(9):
            with socket.create_connection((HOST, net.lb_port), timeout=5) as c:
                assert c.recv(16) == b"hello"
        for _ in range(9):
            assert apiserver.readyz(net.api_endpoint, ca)
        # the probe bakery's `up` and `status` use says why a server is not ready
        unready = apiserver.readyz(f"https://{HOST}:{n1.api_port}", ca)
        assert not unready and unready.detail == "HTTP 500: [-]etcd failed: reason withheld"
        impostor = apiserver.readyz(f"https://{HOST}:{n2.api_port}", ca)
        assert not impostor and "CERTIFICATE_VERIFY_FAILED" in impostor.detail
    finally:
        for srv in servers:
            srv.close()
        for api in apis:
            api.shutdown()
            api.server_close()


def _ca(tmp_path: Path) -> Path:
    """A cluster CA for haproxy -c to read (it opens every ca-file it is given)."""
    s = _spec()
    return pki.ensure(topology.plan(s), tmp_path / "pki").path("ca.crt")


def _answer(srv: socket.socket) -> None:
    while True:
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        with conn, contextlib.suppress(OSError):
            conn.sendall(b"hello")


def test_stats_socket_error_names_the_socket(tmp_path):
    with pytest.raises(ProviderError, match=r"stats\.sock"):
        lb.server_states(tmp_path / "stats.sock")


# -- proc: PID files, stale records, stop by PID -------------------------------------------


def test_pidfile_start_stale_and_stop(tmp_path):
    pidfile = tmp_path / "sleep.pid"
    marker = str(tmp_path / "marker-arg")
    pid = proc.start([sys.executable, "-c", "import time; time.sleep(60)", marker], pidfile=pidfile, marker=marker,
                     log=tmp_path / "sleep.log")
    try:
        assert proc.running(pidfile) == pid
        assert json.loads(pidfile.read_text()) == {"pid": pid, "marker": marker}
        # the same PID recorded with another program's marker is not ours
        assert not proc.alive(proc.Record(pid, "something-else"))
        # our own PID (pytest) is alive but is not the recorded program
        assert not proc.alive(proc.Record(os.getpid(), marker))
    finally:
        assert proc.stop(pidfile) == pid
    assert not pidfile.exists()
    assert proc.exited(pid)
    # a record of a dead process is stale: running() says no, stop() signals nothing
    pidfile.write_text(json.dumps({"pid": pid, "marker": marker}))
    assert proc.running(pidfile) is None
    assert proc.stop(pidfile) is None and not pidfile.exists()
    pidfile.write_text("garbage")
    assert proc.running(pidfile) is None


def test_start_refuses_a_marker_not_in_the_command_line(tmp_path):
    with pytest.raises(ValueError):
        proc.start(["true"], pidfile=tmp_path / "p", marker="nope", log=tmp_path / "log")


def test_stop_escalates_to_sigkill(tmp_path):
    pidfile = tmp_path / "stubborn.pid"
    marker = str(tmp_path / "stubborn")
    code = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    log = tmp_path / "log"
    pid = proc.start([sys.executable, "-c", code, marker], pidfile=pidfile, marker=marker, log=log)
    deadline = time.monotonic() + 10
    while b"ready" not in log.read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert proc.stop(pidfile, timeout=0.5) == pid
    assert proc.exited(pid)


# -- relay: the guestfwd program ------------------------------------------------------------


def test_relay_copies_both_ways_until_the_host_side_closes():
    with socket.socket() as srv:
        srv.bind((HOST, 0))
        srv.listen(1)
        port = srv.getsockname()[1]

        def echo_upper() -> None:
            conn, _ = srv.accept()
            with conn:
                data = b""
                while chunk := conn.recv(4096):
                    data += chunk
                conn.sendall(data.upper())

        t = threading.Thread(target=echo_upper, daemon=True)
        t.start()
        payload = b"get /v2/keys\n" * 1000
        r = subprocess.run([sys.executable, "-m", "bakery.providers.local.relay", HOST, str(port)], input=payload,
                           capture_output=True, timeout=30)
        t.join(5)
    assert r.returncode == 0, r.stderr
    assert r.stdout == payload.upper()


# -- console: boot progress ------------------------------------------------------------------


def test_console_phases():
    assert console.read(b"").phase == "starting"
    assert console.read(b"[    0.000000] Linux version 6.1.0\n").phase == "booting"
    text = (b"[   29.7] cloud-init[222]: Cloud-init v. 22.4.2 running 'init-local' at Fri. Up 29.31 seconds.\n"
            b"[   37.6] cloud-init[239]: Cloud-init v. 22.4.2 running 'init' at Fri. Up 37.28 seconds.\n")
    assert console.read(text).phase == "cloud-init init"
    text += b"[  74.9] cloud-init[334]: Cloud-init v. 22.4.2 running 'modules:final' at Fri\n"
    assert console.read(text).cloud_init == "modules:final" and not console.read(text).finished
    text += b"[  80.0] cloud-init[334]: Cloud-init v. 22.4.2 finished at Fri, 27 Nov 2026. Datasource DataSourceNoCloud\n"
    assert console.read(text).phase == "cloud-init finished"


# -- discovery: Debian's etcd 3.4 as the host's v2 discovery service ----------------------------


def test_discovery_etcd_tokens(tmp_path, started):
    need(f"{discovery.ETCD} (Debian etcd-server)", Path(discovery.ETCD).exists(), "make setup-system")
    s = _spec(base=_free_base())
    net = net_plan(s, topology.plan(s))
    pidfile = tmp_path / "etcd.pid"
    started.append(pidfile)
    data = tmp_path / "data"
    proc.start(discovery.argv("lt", net, data), pidfile=pidfile, marker=str(data), log=tmp_path / "etcd.log")
    deadline = time.monotonic() + 60
    while not discovery.healthy(net.discovery_endpoint):
        assert proc.running(pidfile), (tmp_path / "etcd.log").read_text()[-500:]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    token = discovery.new_token(net.discovery_endpoint, 3)
    assert discovery.token_exists(net.discovery_endpoint, token)
    assert not discovery.token_exists(net.discovery_endpoint, "0" * 32)
    assert discovery.guest_url(token) == f"http://10.0.2.100:2379/v2/keys/_etcd/registry/{token}"
    import httpx

    size = httpx.get(f"{net.discovery_endpoint}/v2/keys/_etcd/registry/{token}/_config/size").json()
    assert size["node"]["value"] == "3"


# -- ssh -------------------------------------------------------------------------------------------


def test_ssh_key_generated_once_0600_and_argv(tmp_path):
    need_binary("ssh-keygen", "make setup-system (openssh-client)")
    folder = tmp_path / "local" / "ssh"
    key = ssh.ensure_key(folder)
    assert (key.stat().st_mode & 0o777) == 0o600
    pub = ssh.public_key(key)
    assert pub.startswith("ssh-ed25519 ")
    assert ssh.ensure_key(folder) == key and ssh.public_key(key) == pub  # reused
    argv = ssh.argv(key, 22030, tmp_path / "kh", "lt-master-0", ["cloud-init", "status"])
    assert argv[:2] == ["ssh", "-i"] and "root@127.0.0.1" in argv
    assert argv[-3:] == ["--", "cloud-init", "status"]
    assert "HostKeyAlias=lt-master-0" in argv and "StrictHostKeyChecking=accept-new" in argv
    key.chmod(0o644)
    with pytest.raises(ProviderError, match="too open"):
        ssh.ensure_key(folder)


# -- the provider, up to the point where a VM would boot ---------------------------------------------


def test_up_refuses_a_port_another_program_holds(tmp_path):
    base = _free_base()
    image = tmp_path / "img"
    image.mkdir()
    for f in ("disk.qcow2", "vmlinuz", "initrd.img"):
        (image / f).write_bytes(b"x")
    s = spec_mod.parse(f"name: lt\nprovider: local\nuser_data: embedded\nlocal: {{runtime: vm, port_base: {base}, image: '{image / 'disk.qcow2'}'}}\n")
    need_binary("qemu-system-x86_64")
    need_binary("haproxy")
    need_binary("cloud-localds")
    with socket.socket() as squatter:
        squatter.bind((HOST, base + 51))
        squatter.listen(1)
        provider = LocalProvider(s, cluster_paths("lt", tmp_path / "build"), no_progress)
        with pytest.raises(ProviderError, match=f"{base + 51}.*port_base"):
            provider.up(lambda lb: pytest.fail("rendered before the ports were checked"))
    assert not (tmp_path / "build" / "lt" / "local" / "lb").exists()


def test_up_without_an_image_says_to_bake(tmp_path):
    need_binary("qemu-system-x86_64")
    need_binary("haproxy")
    need_binary("cloud-localds")
    provider = LocalProvider(_spec(base=_free_base()), cluster_paths("lt", tmp_path), no_progress)
    with pytest.raises(ProviderError, match="bakery bake"):
        provider.up(lambda lb: pytest.fail("rendered without an image"))


def test_down_of_nothing_and_unknown_node(tmp_path):
    provider = LocalProvider(_spec(), cluster_paths("lt", tmp_path), no_progress)
    assert provider.down() == []
    assert provider.down(purge=True) == []
    with pytest.raises(ProviderError, match="not a master"):
        provider.console_log("lt-master-9")


def test_a_relative_build_folder_gives_haproxy_an_absolute_stats_socket(tmp_path, monkeypatch):
    """`make up` passes `-o build`: every path handed to HAProxy and QEMU must be absolute
    (HAProxy reads "build/.../stats.sock" as host "build/..." with a missing port)."""
    haproxy = need_binary("haproxy")
    monkeypatch.chdir(tmp_path)
    provider = LocalProvider(_spec(), cluster_paths("lt", "build"), no_progress)
    assert provider.layout.root.is_absolute() and provider.layout.stats_socket.is_absolute()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(lb.config("lt", provider.net, provider.layout.stats_socket, _ca(tmp_path)))
    r = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


def test_up_refuses_a_port_another_program_holds_but_not_its_own_load_balancers(tmp_path, started):
    """`up` again (the real haproxy running) finds both of its frontends, etcd's and the API's,
    listening: they are its own. A stranger on the API port is named."""
    need_binary("haproxy")
    base = _free_base()
    provider = LocalProvider(_spec(base=base), cluster_paths("lt", tmp_path / "build"), no_progress)
    stranger = socket.socket()
    stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    stranger.bind((HOST, provider.net.api_lb_port))
    stranger.listen(1)
    with stranger, pytest.raises(ProviderError, match=rf"port\(s\) {provider.net.api_lb_port} are in use by another program"):
        provider._check_ports()
    pki.ensure(provider.plan, provider.paths.pki)
    started.append(provider.layout.lb / "pid")
    provider._start_lb(provider._lb_config())
    assert is_listening(provider.net.lb_port) and is_listening(provider.net.api_lb_port)
    provider._check_ports()  # its own: no refusal


def test_down_reports_every_master_it_stopped_even_one_that_exits_at_once(tmp_path, started):
    """`down` SIGTERMs every machine, then waits for each: a master that is already gone by
    the time `down` waits for it was still stopped by `down`, and is reported (an earlier
    `down` left out the masters quick to exit, so a user saw one of three VMs deleted)."""
    provider = LocalProvider(_spec(), cluster_paths("lt", tmp_path), no_progress)
    pids = {}
    for n in provider.net.nodes:
        files = provider.runtime.files(n.name)
        files.folder.mkdir(parents=True)
        pids[n.name] = proc.start([sys.executable, "-c", "import time; time.sleep(600)", vm.marker("lt", n.name)],
                                  pidfile=files.pidfile, marker=vm.marker("lt", n.name), log=files.log)
        started.append(files.pidfile)
    done = provider.down()
    assert [d for d in done if d.startswith("vm ")] == [f"vm {name} (pid {pid})" for name, pid in pids.items()]
    assert all(proc.exited(pid) for pid in pids.values())
