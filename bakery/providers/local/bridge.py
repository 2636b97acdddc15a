"""The container runtime's network on the host: one bridge per cluster, one network
namespace per master, a veth between them. Names are pure functions; the rest runs `ip`.

    host namespace                              netns bakery-<cluster>-<i>
    bridge bk<hash> 10.240.0.1/24  <- veth ->   eth0 10.240.0.1x/24 (the plan's address)

Safety, by construction and checked:

- a namespace gets its address and nothing else: no default route, so a connect to an
  address outside the subnet fails with ENETUNREACH inside it; no packet is sent;
- the bridge never forwards: net.ipv4.conf.<bridge>.forwarding=0 (packets received on
  the bridge are not routed to any other interface, whatever net.ipv4.ip_forward says)
  and IPv6 is disabled on it and in every namespace. This machine has neither iptables
  nor nft; a per-interface sysctl is the kernel's own switch and needs no extra tool;
- `up` refuses a subnet that overlaps any route the host already has (other than our
  own bridge), so the host never sends cluster traffic anywhere but the bridge.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bakery.errors import ProviderError

NETNS_DIR = Path("/run/netns")


@dataclass(frozen=True)
class BridgeNet:
    bridge: str  # host interface name (at most 15 characters)
    host_address: str  # the bridge's address in the cluster subnet
    subnet: str
    prefix: int

    def netns(self, cluster: str, index: int) -> str:
        return f"bakery-{cluster}-{index}"

    def veth(self, index: int) -> str:
        return f"{self.bridge}-{index}"


def bridge_net(cluster: str, subnet: str, taken: set[str]) -> BridgeNet:
    """The bridge of `cluster`: a name from the cluster's hash, the subnet's first host
    address that no master holds (`taken`). Pure."""
    net = ipaddress.IPv4Network(subnet)
    host = next(str(a) for a in net.hosts() if str(a) not in taken)
    name = "bk" + hashlib.sha256(cluster.encode()).hexdigest()[:8]
    return BridgeNet(bridge=name, host_address=host, subnet=str(net), prefix=net.prefixlen)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise ProviderError("`ip` not found: install iproute2 (make setup-system)") from None
    if check and r.returncode != 0:
        raise ProviderError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def routes(netns: str | None = None) -> list[dict[str, object]]:
    """`ip -j route` of the host, or of a namespace."""
    args = ["-n", netns] if netns else []
    return json.loads(_ip(*args, "-j", "-4", "route", "show", "table", "all").stdout or "[]")


def link_exists(name: str, netns: str | None = None) -> bool:
    args = ["-n", netns] if netns else []
    return _ip(*args, "link", "show", "dev", name, check=False).returncode == 0


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def check_subnet_free(br: BridgeNet) -> None:
    """Refuse a subnet that overlaps a route of this host other than our bridge's."""
    ours = ipaddress.IPv4Network(br.subnet)
    for r in routes():
        dst, dev = str(r.get("dst", "")), str(r.get("dev", ""))
        if dst in ("default", "") or dev == br.bridge:
            continue
        try:
            other = ipaddress.IPv4Network(dst, strict=False)
        except ValueError:
            continue
        if ours.overlaps(other):
            raise ProviderError(f"network.subnet {br.subnet} overlaps this machine's route {dst} dev {dev}: "
                                "choose a subnet no interface here uses (see `ip route`)")


def _write_sysctl(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as e:
        raise ProviderError(f"cannot set {path} to {value}: {e.strerror}") from None


def forwarding(bridge: str) -> str:
    return Path(f"/proc/sys/net/ipv4/conf/{bridge}/forwarding").read_text().strip()


def ensure_bridge(br: BridgeNet) -> bool:
    """Create the bridge (True) or find it (False); either way it holds its address, is up,
    forwards nothing and has no IPv6."""
    created = False
    if not link_exists(br.bridge):
        check_subnet_free(br)
        _ip("link", "add", "name", br.bridge, "type", "bridge")
        created = True
    conf = Path("/proc/sys/net")
    _write_sysctl(conf / "ipv6/conf" / br.bridge / "disable_ipv6", "1")
    _write_sysctl(conf / "ipv4/conf" / br.bridge / "forwarding", "0")
    if forwarding(br.bridge) != "0":
        raise ProviderError(f"{br.bridge}: net.ipv4.conf.{br.bridge}.forwarding stays on; refusing to start containers")
    addr = f"{br.host_address}/{br.prefix}"
    have = _ip("-j", "-4", "addr", "show", "dev", br.bridge).stdout
    if addr.split("/")[0] not in have:
        _ip("addr", "add", addr, "dev", br.bridge)
    _ip("link", "set", br.bridge, "up")
    return created


def ensure_node_netns(br: BridgeNet, netns: str, veth: str, address: str, mac: str) -> None:
    """A namespace with the node's address on eth0 (a veth into the bridge) and lo; no route but the subnet's."""
    if not netns_exists(netns):
        _ip("netns", "add", netns)
    if not link_exists("eth0", netns):
        if link_exists(veth):
            _ip("link", "del", veth)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
    _write_ns(netns, "net.ipv6.conf.all.disable_ipv6", "1")
    _write_ns(netns, "net.ipv6.conf.default.disable_ipv6", "1")
    _ip("-n", netns, "link", "set", "eth0", "address", mac)
    have = _ip("-n", netns, "-j", "-4", "addr", "show", "dev", "eth0").stdout
    if address.split("/")[0] not in have:
        _ip("-n", netns, "addr", "add", address, "dev", "eth0")
    _ip("-n", netns, "link", "set", "lo", "up")
    _ip("-n", netns, "link", "set", "eth0", "up")
    _ip("link", "set", veth, "master", br.bridge)
    _ip("link", "set", veth, "up")


def _write_ns(netns: str, key: str, value: str) -> None:
    try:
        r = subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-q", "-w", f"{key}={value}"],
                           capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise ProviderError("`sysctl` not found: install procps (make setup-system)") from None
    if r.returncode != 0:
        raise ProviderError(f"{netns}: sysctl {key}={value}: {r.stderr.strip()}")


def remove_node_netns(netns: str, veth: str) -> bool:
    removed = False
    if link_exists(veth):
        _ip("link", "del", veth, check=False)
        removed = True
    if netns_exists(netns):
        _ip("netns", "del", netns)
        removed = True
    return removed


def remove_bridge(br: BridgeNet) -> bool:
    if not link_exists(br.bridge):
        return False
    _ip("link", "del", br.bridge)
    return True
