"""The local cluster's network plan: host ports, guest addresses, MACs. Pure.

Every VM has two NICs:

- eth0 on the private network: a socket connection to one hub QEMU process that
  forwards frames between its ports (no root, no bridge); the guest holds the
  plan's address (10.240.0.10, ...).
- eth1, a user-mode NIC of its own with `restrict=on`: the host reaches the guest's
  ssh and etcd client ports through `hostfwd` on 127.0.0.1. A user-mode NIC on the
  shared hub would answer the peers' connections itself (TESTING.md), so it is
  never shared. The discovery etcd on the host is reached through `guestfwd`, the
  one way out of a restricted user-mode network.

Host ports, all on 127.0.0.1, from `local.port_base` (B), node i of N:

    B + 0        HAProxy: the cluster's etcd endpoint
    B + 1, B + 2 discovery etcd client and peer (bootstrap: discovery)
    B + 3        HAProxy: the Kubernetes API (admin.kubeconfig points here)
    B + 10 + i   hub socket of node i
    B + 30 + i   ssh of node i
    B + 50 + i   etcd client port of node i (HAProxy's backends)
    B + 70 + i   API server port of node i (HAProxy's API backends)

Containers need no per-node forwards: HAProxy reaches their addresses on the bridge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bakery.spec import ClusterSpec
from bakery.topology import ClusterPlan

HOST = "127.0.0.1"
# How many ports from local.port_base a cluster may use (B + 70 + i, i < 7, is the last).
PORT_SPAN = 80
# The user-mode network every VM gets on eth1 (QEMU's default numbering).
USER_NET = "10.0.2.0/24"
USER_GUEST = "10.0.2.15"
# Where a guest finds the host's discovery etcd: a guestfwd address in USER_NET.
GUEST_DISCOVERY = "10.0.2.100"
GUEST_DISCOVERY_PORT = 2379


@dataclass(frozen=True)
class NodeNet:
    name: str
    index: int
    address: str  # on the private network
    prefix: int
    hub_port: int
    ssh_port: int
    etcd_port: int  # host port forwarded to the guest's etcd client port
    api_port: int  # host port forwarded to the guest's API server port
    private_mac: str
    user_mac: str


@dataclass(frozen=True)
class NetPlan:
    lb_port: int
    discovery_port: int
    discovery_peer_port: int
    api_lb_port: int
    guest_etcd_port: int
    guest_api_port: int
    nodes: tuple[NodeNet, ...]

    @property
    def lb_endpoint(self) -> str:
        return f"https://{HOST}:{self.lb_port}"

    @property
    def api_endpoint(self) -> str:
        return f"https://{HOST}:{self.api_lb_port}"

    @property
    def discovery_endpoint(self) -> str:
        return f"http://{HOST}:{self.discovery_port}"

    @property
    def host_ports(self) -> tuple[int, ...]:
        """Every port the cluster listens on, hub ports included."""
        ports = [self.lb_port, self.discovery_port, self.discovery_peer_port, self.api_lb_port]
        for n in self.nodes:
            ports += [n.hub_port, n.ssh_port, n.etcd_port, n.api_port]
        return tuple(ports)

    def node(self, name: str) -> NodeNet:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


def mac(cluster: str, node: str, nic: str) -> str:
    """A stable, locally administered MAC for one NIC of one node."""
    digest = hashlib.sha256(f"{cluster}/{node}/{nic}".encode()).digest()
    return "52:54:" + ":".join(f"{b:02x}" for b in digest[:4])


def node_net(spec: ClusterSpec, cluster: str, name: str, index: int, address: str, prefix: int) -> NodeNet:
    """The network of one master: slot `index` picks its ports (and, for a container,
    its namespace and veth); `address` is where it stands on the private network."""
    base = spec.provider_spec.port_base  # type: ignore[union-attr]
    return NodeNet(
        name=name,
        index=index,
        address=address,
        prefix=prefix,
        hub_port=base + 10 + index,
        ssh_port=base + 30 + index,
        etcd_port=base + 50 + index,
        api_port=base + 70 + index,
        private_mac=mac(cluster, name, "private"),
        user_mac=mac(cluster, name, "user"),
    )


def net_plan(spec: ClusterSpec, plan: ClusterPlan, members: Sequence[tuple[str, int, str]] | None = None) -> NetPlan:
    """The plan's masters, or `members` ((name, slot, address) of the local group's, group.py)."""
    base = spec.provider_spec.port_base  # type: ignore[union-attr]
    prefix = int(plan.nodes[0].subnet.split("/")[1])
    chosen = members if members is not None else [(n.name, n.index, n.address) for n in plan.nodes]
    return NetPlan(
        lb_port=base,
        discovery_port=base + 1,
        discovery_peer_port=base + 2,
        api_lb_port=base + 3,
        guest_etcd_port=spec.etcd.client_port,
        guest_api_port=spec.load_balancer.port,
        nodes=tuple(node_net(spec, plan.name, name, index, address, prefix) for name, index, address in chosen),
    )


def listening_ports(proc_net: Path = Path("/proc/net/tcp")) -> set[tuple[str, int]]:
    """(address, port) of every IPv4 TCP socket in LISTEN state on this host.

    Read from /proc rather than probed with connect(): a QEMU socket netdev in
    listen mode accepts exactly one connection, so a probe would take a VM's place.
    """
    out: set[tuple[str, int]] = set()
    for line in proc_net.read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != "0A":  # TCP_LISTEN
            continue
        addr_hex, port_hex = fields[1].split(":")
        raw = bytes.fromhex(addr_hex)[::-1]  # little-endian on x86
        out.add((".".join(str(b) for b in raw), int(port_hex, 16)))
    return out


def is_listening(port: int, address: str = HOST) -> bool:
    ports = listening_ports()
    return (address, port) in ports or ("0.0.0.0", port) in ports


def free_port_base(start: int, stop: int = 60000, step: int = 100) -> int | None:
    """The first port_base from `start` (in `step`s) whose PORT_SPAN ports nothing listens on."""
    taken = {p for _, p in listening_ports()}
    return next((b for b in range(start, stop, step) if not taken & set(range(b, b + PORT_SPAN))), None)
