"""The local master group's membership: which masters exist now, at which address.

With the container runtime and the small, store-backed user-data (`user_data: store`),
masters are cattle: every one boots the same user-data and bakery-node makes it a
master wherever it stands. The local group then works as an autoscaling group does:
a master that died is not restarted in its slot but replaced by a new one, with a new
name and a new address from the subnet, and a rollout surges one new master before it
retires an old one. This module keeps that membership, in
build/<cluster>/local/group.json, written atomically:

    {"version": 1, "last_host": "10.240.0.12", "serial": 0,
     "members": [{"name": "demo-master-0", "slot": 0, "address": "10.240.0.10", "zone": "local"}, ...]}

A group starts as the plan's masters (same names, addresses, slots: a cluster that
never lost a master looks exactly as before). A new member is named
`<cluster>-master-r<serial>` ("r" for replacement: it can never be one of the plan's
fixed names, which bakery-node refuses to impersonate), takes the lowest free slot (the
slot names its network namespace and veth) and the next address after the last one
handed out that no member, the bridge or any earlier member holds, wrapping around the
subnet once before giving up. Pure but for `load` and `save`.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from bakery.errors import ProviderError
from bakery.output import atomic_write
from bakery.topology import ClusterPlan

VERSION = 1


@dataclass(frozen=True)
class Member:
    name: str
    slot: int
    address: str
    zone: str


@dataclass(frozen=True)
class Group:
    members: tuple[Member, ...]
    last_host: str  # the last address handed out
    serial: int = 0  # replacements named so far
    retired: tuple[str, ...] = field(default=())  # addresses earlier members held

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    def names(self) -> list[str]:
        return [m.name for m in self.members]


def initial(plan: ClusterPlan) -> Group:
    """The plan's masters as the group's first members."""
    members = tuple(Member(n.name, n.index, n.address, n.zone) for n in plan.nodes)
    last = max((ipaddress.IPv4Address(m.address) for m in members), default=None)
    return Group(members=members, last_host=str(last) if last else "")


def load(path: Path, plan: ClusterPlan) -> Group:
    """The recorded group, or the plan's masters when none was recorded yet."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return initial(plan)
    except (OSError, ValueError) as e:
        raise ProviderError(f"{path}: unreadable ({e}); it records which masters the local group runs: "
                            "`bakery down --purge` starts the group afresh") from None
    try:
        if doc.get("version") != VERSION:
            raise ValueError(f"version {doc.get('version')!r}, this bakery reads {VERSION}")
        return Group(members=tuple(Member(**m) for m in doc["members"]), last_host=doc["last_host"],
                     serial=int(doc["serial"]), retired=tuple(doc.get("retired", ())))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ProviderError(f"{path}: not a local group record ({e}); `bakery down --purge` starts the group afresh") from None


def save(path: Path, group: Group) -> None:
    doc = {"version": VERSION, "last_host": group.last_host, "serial": group.serial,
           "members": [asdict(m) for m in group.members], "retired": list(group.retired)}
    atomic_write(path, json.dumps(doc, indent=2) + "\n", 0o644)


def allocate(group: Group, cluster: str, subnet: str, reserved: set[str]) -> tuple[Group, Member]:
    """A new member for `group` (not yet launched): the next free address of `subnet`
    after `group.last_host` (never `reserved`, a member's or a retired member's), the
    lowest free slot, the next replacement name. Returns the group with it added."""
    net = ipaddress.IPv4Network(subnet)
    hosts = list(net.hosts())
    taken = {m.address for m in group.members} | set(group.retired) | reserved
    start = hosts.index(ipaddress.IPv4Address(group.last_host)) + 1 if group.last_host and \
        ipaddress.IPv4Address(group.last_host) in net else 0
    address = next((str(a) for a in hosts[start:] + hosts[:start] if str(a) not in taken), None)
    if address is None:  # every address used once: reuse a retired one no member holds now
        in_use = {m.address for m in group.members} | reserved
        address = next((str(a) for a in hosts[start:] + hosts[:start] if str(a) not in in_use), None)
    if address is None:
        raise ProviderError(f"the subnet {subnet} has no free address for another master "
                            f"({len(group.members)} masters, {len(reserved)} reserved)")
    slots = {m.slot for m in group.members}
    slot = next(i for i in range(len(slots) + 1) if i not in slots)
    serial = group.serial + 1
    zones = sorted({m.zone for m in group.members}) or ["local"]
    zone = min(zones, key=lambda z: sum(1 for m in group.members if m.zone == z))  # the emptiest zone
    member = Member(f"{cluster}-master-r{serial}", slot, address, zone)
    return replace(group, members=(*group.members, member), last_host=address, serial=serial), member


def without(group: Group, name: str) -> Group:
    """`group` after member `name` left; its address is never handed out again first."""
    gone = group.member(name)
    return replace(group, members=tuple(m for m in group.members if m.name != name),
                   retired=tuple(dict.fromkeys((*group.retired, gone.address))))
