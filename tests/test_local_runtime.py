"""The local provider's container runtime without booting anything: names and command
lines (pure), the subnet check against this host's real routes, the host-tool checks of
`bakery bake` and `bakery up` (exit 4/5, nothing started), and `bakery status` output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bakery import cli, hosttools, pki, topology
from bakery import spec as spec_mod
from bakery.errors import BakeError, ProviderError
from bakery.providers.local import bridge, container, lb, seed
from bakery.providers.local.net import net_plan
from tests.conftest import REPO, need_binary


def _spec(text: str = "") -> spec_mod.ClusterSpec:
    return spec_mod.parse(f"name: lt\nprovider: local\nruntime: systemd\n{text}")


def test_container_is_the_default_runtime_and_vm_is_accepted() -> None:
    assert _spec().provider_spec.runtime == "container"  # type: ignore[union-attr]
    assert _spec("user_data: embedded\nlocal: {runtime: vm}\n").provider_spec.runtime == "vm"  # type: ignore[union-attr]
    with pytest.raises(spec_mod.SpecError) as refused:  # QEMU guests cannot reach the folder store
        _spec("local: {runtime: vm}\n")
    assert any("user_data" in line and "user_data: embedded" in line for line in refused.value.lines())
    with pytest.raises(spec_mod.SpecError) as e:
        _spec("local: {runtime: docker}\n")
    assert "local.runtime" in "\n".join(e.value.lines()) and "container" in "\n".join(e.value.lines())


def test_bridge_names_fit_linux_interface_names_and_the_host_address_is_no_masters() -> None:
    s = _spec("masters: 7\nnetwork: {subnet: 10.251.3.0/24, first_host: 1}\n")
    plan = topology.plan(s)
    taken = {n.address for n in plan.nodes}
    br = bridge.bridge_net("a-cluster-name-of-32-characters-", "10.251.3.0/24", taken)
    assert len(br.bridge) <= 15 and all(len(br.veth(i)) <= 15 for i in range(7))
    assert br.host_address not in taken and br.host_address.startswith("10.251.3.")
    assert bridge.bridge_net("other", "10.251.3.0/24", taken).bridge != br.bridge


def test_nspawn_argv_boots_the_overlay_in_the_masters_namespace_unregistered(tmp_path: Path) -> None:
    files = container.ContainerFiles(tmp_path / "lt-master-0")
    argv = container.nspawn_argv("lt", "lt-master-0", files, "bakery-lt-0")
    assert argv[0] == "systemd-nspawn" and "--boot" in argv
    assert f"--directory={files.root}" in argv
    assert "--network-namespace-path=/run/netns/bakery-lt-0" in argv
    assert "--register=no" in argv and "--keep-unit" in argv
    assert f"--machine={container.machine_name('lt', 'lt-master-0')}" in argv


def test_container_network_config_has_the_address_and_no_route() -> None:
    s = _spec()
    n = net_plan(s, topology.plan(s)).nodes[0]
    doc = yaml.safe_load(seed.container_network_config(n))
    (eth,) = doc["ethernets"].values()
    assert eth["addresses"] == [f"{n.address}/{n.prefix}"]
    assert not {"gateway4", "routes", "dhcp4"} & set(eth)


def test_haproxy_backends_are_the_containers_addresses(tmp_path: Path) -> None:
    s = _spec()
    net = net_plan(s, topology.plan(s))
    ca = pki.ensure(topology.plan(s), tmp_path / "pki").path("ca.crt")
    cfg = lb.config("lt", net, tmp_path / "stats.sock", ca, {n.name: (n.address, 2379) for n in net.nodes},
                    {n.name: (n.address, 6443) for n in net.nodes})
    for n in net.nodes:
        assert f"server {n.name} {n.address}:2379 check" in cfg and f"server {n.name} {n.address}:6443 check" in cfg
    need_binary("haproxy")
    (tmp_path / "haproxy.cfg").write_text(cfg)
    r = subprocess.run(["haproxy", "-c", "-q", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_a_subnet_that_overlaps_a_route_of_this_host_is_refused() -> None:
    need_binary("ip")
    # loopback is routed on every host ("local 127.0.0.0/8 dev lo" in table local)
    br = bridge.bridge_net("lt", "127.0.0.0/24", set())
    with pytest.raises(ProviderError, match=r"127\.0\.0\.0/24 overlaps this machine's route .* dev lo"):
        bridge.check_subnet_free(br)


def test_hosttools_names_the_package_and_the_make_target() -> None:
    with pytest.raises(BakeError) as e:
        hosttools.require({"sh": "dash", "bakery-no-such-tool": "bakery-pkg"}, "`bakery bake`", BakeError, target="bake")
    assert "bakery-no-such-tool (Debian package bakery-pkg)" in str(e.value)
    assert "`make bake`" in str(e.value) and "dash" not in str(e.value)
    hosttools.require({"sh": "dash"}, "x", BakeError, target="bake")  # present: no error


def _bin_with(tmp_path: Path, *tools: str) -> str:
    """A PATH holding only `tools` (links to the real ones)."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for t in tools:
        real = need_binary(t)
        (folder / t).symlink_to(real)
    return str(folder)


def _run(tmp_path: Path, path: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bakery.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PATH": path}, timeout=120)


def test_bake_without_debootstrap_exits_4_and_stages_nothing(tmp_path: Path) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text("name: lt\nprovider: local\n")
    r = _run(tmp_path, _bin_with(tmp_path, "packer"), "bake", "-f", str(spec), "-o", str(tmp_path / "build"))
    assert r.returncode == 4, r.stderr
    assert "debootstrap (Debian package debootstrap)" in r.stderr and "make bake" in r.stderr
    assert not (tmp_path / "build" / "lt" / "packer").exists()


def test_up_without_systemd_nspawn_exits_5_and_starts_nothing(tmp_path: Path) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text("name: lt\nprovider: local\nruntime: systemd\n")
    r = _run(tmp_path, _bin_with(tmp_path, "haproxy", "ip"), "up", "-f", str(spec), "-o", str(tmp_path / "build"))
    assert r.returncode == 5, r.stderr
    assert "systemd-nspawn (Debian package systemd-container)" in r.stderr and "make up" in r.stderr
    assert not (tmp_path / "build" / "lt" / "local").exists()


def test_status_of_a_stopped_cluster_is_tables_and_json_never_a_repr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text("name: lt\nprovider: local\nruntime: systemd\nnetwork: {subnet: 10.252.9.0/24}\n")
    assert cli.main(["status", "-f", str(spec), "-o", str(tmp_path / "build")]) == 0
    text = capsys.readouterr().out
    assert "{" not in text and "'" not in text, text
    assert "NODE" in text and "SERVICE" in text and "supervisor  stopped" in text
    assert "lt-master-0" in text and "stopped" in text
    assert cli.main(["status", "-f", str(spec), "-o", str(tmp_path / "build"), "--output", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == cli.STATUS_SCHEMA
    assert {"cluster", "provider", "endpoint", "nodes", "extra"} <= set(doc)
    assert [n["state"] for n in doc["nodes"]] == ["stopped"] * 3
    assert doc["extra"]["runtime"] == "container" and doc["extra"]["backends"] == {}
