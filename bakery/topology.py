"""spec -> ClusterPlan: names, addresses, zones, etcd peer URLs, the LB endpoint.

A pure, deterministic function of the spec (STYLE.md #4): master i is always
`<cluster>-master-<i>` in zone i mod Z with host number first_host + i, whatever the
cloud says. The load balancer's cloud-assigned name, which only exists after the
provider created it, comes in as an argument, never from a live lookup here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from bakery.spec import ClusterSpec


@dataclass(frozen=True)
class Node:
    index: int
    name: str
    address: str
    zone: str
    subnet: str
    client_port: int
    peer_port: int

    @property
    def peer_url(self) -> str:
        return f"https://{self.address}:{self.peer_port}"

    @property
    def client_url(self) -> str:
        return f"https://{self.address}:{self.client_port}"


@dataclass(frozen=True)
class LoadBalancer:
    port: int  # the API servers' port
    dns_names: tuple[str, ...]
    ips: tuple[str, ...]
    client_port: int | None = None  # where clients reach the LB, if not `port`

    @property
    def host(self) -> str | None:
        """The name clients use: the first DNS name, else the first IP, else None (not known yet)."""
        return (self.dns_names or self.ips or (None,))[0]

    @property
    def endpoint(self) -> str | None:
        return f"https://{self.host}:{self.client_port or self.port}" if self.host else None


@dataclass(frozen=True)
class ClusterPlan:
    spec: ClusterSpec
    nodes: tuple[Node, ...]
    lb: LoadBalancer
    service_ip: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def initial_cluster(self) -> str:
        """etcd --initial-cluster for the whole first-boot membership."""
        return ",".join(f"{n.name}={n.peer_url}" for n in self.nodes)

    @property
    def client_urls(self) -> tuple[str, ...]:
        return tuple(n.client_url for n in self.nodes)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"{name!r} is not a master of {self.name} (masters: {', '.join(n.name for n in self.nodes)})")


def node_name(cluster: str, index: int) -> str:
    return f"{cluster}-master-{index}"


def plan(spec: ClusterSpec, *, lb_dns_names: tuple[str, ...] = (), lb_ips: tuple[str, ...] = (),
         lb_port: int | None = None) -> ClusterPlan:
    """The cluster's plan. `lb_*` are what the provider learnt when it created the LB (its
    names; the port clients reach it on, when not load_balancer.port)."""
    net = spec.network
    zones = spec.zones
    nodes = []
    for i in range(spec.masters):
        zone = zones[i % len(zones)]
        subnet = ipaddress.IPv4Network(zone.subnet or net.subnet)
        if net.addresses:
            address = net.addresses[i]
        else:
            address = str(subnet.network_address + net.first_host + i)
        nodes.append(
            Node(
                index=i,
                name=node_name(spec.name, i),
                address=address,
                zone=zone.name,
                subnet=str(subnet),
                client_port=spec.etcd.client_port,
                peer_port=spec.etcd.peer_port,
            )
        )
    lb_spec = spec.load_balancer
    dns = _unique(((lb_spec.dns_name,) if lb_spec.dns_name else ()) + tuple(lb_dns_names))
    ips = _unique(((lb_spec.ip,) if lb_spec.ip else ()) + tuple(lb_ips))
    service_ip = str(ipaddress.IPv4Network(net.service_cidr).network_address + 1)
    return ClusterPlan(spec=spec, nodes=tuple(nodes), lb=LoadBalancer(lb_spec.port, dns, ips, lb_port), service_ip=service_ip)


def _unique(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def local_host(node: Node) -> str:
    """Where a node's own components reach its etcd and API server.

    127.0.0.1 on a real node. When the node's address is itself a loopback address
    (several nodes sharing one host in tests and local development), that address,
    so that the members do not all bind 127.0.0.1.
    """
    return node.address if ipaddress.ip_address(node.address).is_loopback else "127.0.0.1"
