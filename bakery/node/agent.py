"""The agent's steps, in order, each logged on one line:

    1. identity      instance-data.json -> instance id, address, zone, hostname
    2. description   the store's description with the digest the user-data names
    3. ca material   the CAs and service-account key, each checked against the description
    4. certificates  this master's own leaves, keys made here and never uploaded
    5. membership    etcd: day 0 bootstrap or day 2 learner join (join.py decides the flags)
    6. files         the node's tree, from the same builders `bakery render` runs
    7. start         the same start commands the embedded user-data used to run
    8. settle        promote the learner once in sync, record the member in the store

A failure in steps 1-5 raises before anything is written under the root or etcd is
touched. Rerunning after a reboot is safe: the CA material and leaves already in the
state folder are checked and reused, files are rewritten with the same bytes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bakery import pki as pki_mod
from bakery import render, topology
from bakery.discovery import Bootstrap
from bakery.errors import NodeError, PKIError
from bakery.etcd import TLS, Client
from bakery.node import description as desc_mod
from bakery.node import join as join_mod
from bakery.node.description import NodeConfig
from bakery.node.identity import Identity, source_address_towards
from bakery.output import atomic_write
from bakery.render.builders import NodeFile
from bakery.render.flags import ETCD_DATA_DIR
from bakery.store import Store

log = logging.getLogger("bakery.node")

STATE_DIR = Path("/var/lib/bakery")


Runner = Callable[[Sequence[str]], None]


def run_command(argv: Sequence[str]) -> None:
    """Run one start command; a failure is the agent's failure, with the command named."""
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise NodeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()[-300:]}")


@dataclass
class Prepared:
    description: desc_mod.Description
    plan: topology.ClusterPlan
    me: topology.Node
    pki: pki_mod.PKI

    @property
    def render_plan(self) -> topology.ClusterPlan:
        """The spec's plan when this master is one of its fixed slots, else a plan of this
        master alone (a group member: its peers are found in etcd, not in the spec)."""
        if self.me in self.plan.nodes:
            return self.plan
        return dataclasses.replace(self.plan, nodes=(self.me,))

    def etcd_client_tls(self) -> TLS:
        return TLS(self.pki.path("etcd/ca.crt"), self.pki.path("etcd/healthcheck-client.crt"),
                   self.pki.path("etcd/healthcheck-client.key"))


@dataclass
class Agent:
    config: NodeConfig
    identity: Identity
    store: Store
    root: Path = Path("/")
    state_dir: Path = STATE_DIR
    run: Runner = run_command
    # whether the cloud still runs a member's instance (None: unknown); groups supply it
    is_alive: Callable[[str], bool | None] | None = None
    etcd_data_dir: Path | None = None  # default: the rendered data dir under root
    timing: join_mod.Timing = field(default_factory=join_mod.Timing)
    files: list[NodeFile] = field(default_factory=list)
    restore_tool: str | None = None  # etcdutl for a restore (default: restore.find_tool())

    def prepare(self) -> Prepared:
        """Steps 2-4: nothing outside the state folder is written."""
        desc = desc_mod.fetch(self.store, self.config.cluster, self.config.digest)
        log.info("description %s: cluster %s, %d masters, bootstrap %s", desc.digest, desc.cluster,
                 desc.spec.masters, desc.bootstrap.mode)
        plan = topology.plan(desc.spec, lb_dns_names=desc.lb.dns_names, lb_ips=desc.lb.ips)
        me = resolve_node(plan, self.identity)
        log.info("identity %s: node %s at %s in %s%s", self.identity.instance_id, me.name, me.address, me.zone,
                 "" if me in plan.nodes else " (group member)")
        node_plan = dataclasses.replace(plan, nodes=(me,))
        files = desc_mod.fetch_ca_material(self.store, desc)
        try:
            cas = pki_mod.ca_material(node_plan, files, f"{self.store.url}/{desc.cluster}/pki")
        except PKIError as e:
            raise NodeError(f"the store's CA material does not check out: {e.lines()[0]}") from None
        log.info("ca material: %d objects checked against the description", len(files))
        keys = pki_mod.ensure(node_plan, self._own_pki(node_plan, files, cas))
        for change in keys.changes:
            log.info("certificates: %s", change)
        return Prepared(desc, plan, me, keys)

    def _own_pki(self, node_plan: topology.ClusterPlan, files: dict[str, bytes], cas: pki_mod.CAMaterial) -> Path:
        """This master's PKI folder, holding the store's CA material: kept across boots
        (its leaves and their keys are reused), started anew on first boot, when the
        operator's CA material changed, or when the folder does not check out (its leaves
        are this master's own and can always be issued again)."""
        folder = self.state_dir / "pki"
        try:
            current = pki_mod.load(node_plan, folder)
        except PKIError as e:
            aside = folder.with_name(f"pki.broken-{int(time.time())}")
            log.warning("certificates: %s; moved to %s, issuing anew", e.lines()[0], aside)
            folder.rename(aside)
            current = None
        if current is not None and all(current.files.get(rel, (b"",))[0] == data for rel, data in files.items()):
            return folder
        if current is not None:
            log.warning("certificates: the store's CA material differs from this master's copy; issuing every leaf anew")
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        pki_mod.seed(node_plan, folder, files, cas)
        return folder

    def start_etcd(self, p: Prepared, bootstrap: Bootstrap) -> None:
        """Steps 6-7 for the bootstrap the join chose: write the tree, run the start commands."""
        self.files = render.node_files(p.render_plan, p.me, p.pki, bootstrap)
        write_files(self.root, self.files)
        log.info("files: %d written under %s", len(self.files), self.root)
        commands = render.start_commands(p.plan)
        for argv in commands:
            self.run(argv)
        log.info("start: %d commands run", len(commands))

    def stop_etcd(self, p: Prepared, timeout: float = 120.0) -> None:
        """Stop this master's etcd and wait (bounded) until its client port refuses connections."""
        for argv in render.stop_etcd_commands(p.plan):
            self.run(argv)
        deadline = time.monotonic() + timeout
        while _accepts(p.me.address, p.me.client_port):
            if time.monotonic() > deadline:
                raise NodeError(f"etcd still listens on {p.me.address}:{p.me.client_port} {timeout:.0f}s after "
                                f"{'; '.join(' '.join(a) for a in render.stop_etcd_commands(p.plan))}; not moving its data dir")
            time.sleep(1.0)
        log.info("etcd stopped")

    def apply(self) -> join_mod.Joined:
        """Every step. Returns once this master's etcd member is a started voter."""
        p = self.prepare()
        tls = p.etcd_client_tls()
        joined = join_mod.join(
            p.render_plan, p.me, p.description.bootstrap, self.store,
            lambda urls: Client(list(urls), tls),
            lambda bootstrap: self.start_etcd(p, bootstrap),
            is_alive=self.is_alive,
            data_dir=self.etcd_data_dir or self.root / ETCD_DATA_DIR.lstrip("/"),
            timing=self.timing,
            restore_tool=self.restore_tool,
            stop_etcd=lambda: self.stop_etcd(p),
        )
        log.info("settled: %s is member %x (%s)", p.me.name, joined.member_id, joined.how)
        return joined


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return True
    except OSError:
        return False


def resolve_node(plan: topology.ClusterPlan, ident: Identity) -> topology.Node:
    """This instance as a node of the plan: the fixed slot at its address, else a group
    member named by its hostname in its zone's subnet."""
    spec = plan.spec
    address = ident.address
    if address is None:
        # GCE: no address in instance-data; the one that routes into the masters' subnet.
        subnet = ipaddress.IPv4Network(spec.network.subnet)
        address = source_address_towards(str(subnet.network_address + 1))
    for n in plan.nodes:
        if n.address == address:
            return n
    zones = {z.name: z for z in spec.zones}
    zone = zones.get(ident.zone)
    subnet_str = (zone.subnet if zone and zone.subnet else None) or spec.network.subnet
    subnet = ipaddress.IPv4Network(subnet_str)
    if ipaddress.IPv4Address(address) not in subnet:
        raise NodeError(f"this instance's address {address} is outside the masters' subnet {subnet} "
                        f"(zone {ident.zone}): not a master of {plan.name}")
    if any(n.name == ident.hostname for n in plan.nodes):
        raise NodeError(f"hostname {ident.hostname} names the fixed master at another address; refusing to impersonate it")
    return topology.Node(index=-1, name=ident.hostname, address=address, zone=ident.zone, subnet=str(subnet),
                         client_port=spec.etcd.client_port, peer_port=spec.etcd.peer_port)


def write_files(root: Path, files: Sequence[NodeFile]) -> None:
    """Each file atomically, in the builders' order (certificates before the manifests
    that need them), with its mode and, when running as root, its owner."""
    for f in files:
        dest = root / f.path.lstrip("/")
        atomic_write(dest, f.content, f.mode)
        if os.geteuid() == 0 and f.owner != "root:root":
            user, _, group = f.owner.partition(":")
            shutil.chown(dest, user, group or None)
