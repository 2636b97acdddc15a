"""The pipeline's steps wired together, for the CLI and the providers.

    cluster.yaml -> spec -> plan -> pki.ensure (verify, issue in memory) -> bootstrap -> render -> (pki.save, write_nodes)

`Cluster.load` reads the spec and state; `Cluster.render(lb)` runs the pure steps
(issuing certificates for the load balancer's names first); `write_nodes` is the
only step that writes the rendered trees. Providers receive `Cluster.render_callback()`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bakery import discovery, output, pki, render, spec, state, topology
from bakery.errors import PKIError
from bakery.node import description
from bakery.providers.base import LBAddress, RenderCallback, RenderedNode
from bakery.render.userdata import UserData
from bakery.store import Store, location, open_store

NODES_MODE = 0o700  # nodes/ and each node's tree: they hold private keys


@dataclass
class Rendered:
    plan: topology.ClusterPlan
    pki: pki.PKI
    nodes: dict[str, render.NodeRender]
    lb: LBAddress
    bootstrap: discovery.Bootstrap
    save_pki: bool = False  # write_nodes swaps the changed PKI in with the node trees


@dataclass
class Cluster:
    spec: spec.ClusterSpec
    paths: state.ClusterPaths
    state: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, file: str | Path, build_dir: str | Path = "build") -> Cluster:
        s = spec.load(file)
        p = state.paths(s.name, build_dir)
        return cls(s, p, state.load(p))

    def lb_address(self) -> LBAddress:
        """The load balancer's names as the provider recorded them in state.json."""
        lb = self.state.get("lb", {})
        return LBAddress(tuple(lb.get("dns_names", ())), tuple(lb.get("ips", ())), lb.get("port"))

    def render(self, lb: LBAddress | None = None, *, provider: str | None = None, ssh_authorized_keys: Sequence[str] = (),
               keep_pki: bool = True) -> Rendered:
        """Plan, certificates (verified, and issued or re-issued for these LB names), and
        every node's files and user-data.

        The PKI is loaded and checked from build/<cluster>/pki and changed in memory only;
        with keep_pki, `write_nodes` stages it beside the node trees and swaps it in with
        them, so a spec that fails to render, or a disk that fills while writing, leaves
        the PKI as it was.
        """
        lb = lb or self.lb_address()
        plan = topology.plan(self.spec, lb_dns_names=lb.dns_names, lb_ips=lb.ips, lb_port=lb.port)
        bootstrap = discovery.bootstrap_for(self.spec, self.state)
        keys = pki.ensure(plan, self.paths.pki, write=False)
        small = None
        if self.spec.user_data == "store":
            small = self.node_user_data(lb, bootstrap, keys, provider or self.spec.provider, ssh_authorized_keys)
        nodes = render.render_cluster(plan, keys, bootstrap, provider=provider, ssh_authorized_keys=ssh_authorized_keys,
                                      user_data=small)
        save = keep_pki and bool(keys.changes or not (self.paths.pki / pki.MANIFEST).exists())
        return Rendered(plan, keys, nodes, lb, bootstrap, save_pki=save)

    def store_url(self) -> str:
        return location.store_url(self.spec, self.paths.root)

    def node_user_data(self, lb: LBAddress, bootstrap: discovery.Bootstrap, keys: pki.PKI, provider: str,
                       ssh_authorized_keys: Sequence[str] = ()) -> UserData:
        """The cluster's one small user-data: the store URL and the digest of the
        description `publish` uploads (computed here, before anything is uploaded)."""
        doc, _ = description.document(self.spec, lb, bootstrap, keys)
        config = description.NodeConfig(self.spec.name, self.store_url(), description.digest(doc))
        return render.node_user_data(config.to_json(), provider, ssh_authorized_keys=ssh_authorized_keys)

    def publish(self, rendered: Rendered, store: Store | None = None) -> tuple[str, list[str]]:
        """Upload the CA material and the description the small user-data names to `store`
        (default: the spec's store with this machine's credentials); (digest, keys written)."""
        store = store or open_store(self.store_url())
        return description.publish(store, self.spec, rendered.lb, rendered.bootstrap, rendered.pki)

    def adopt_pki(self) -> pki.PKI:
        """Write the manifest of a PKI an older bakery made, once every signature checks out."""
        state.prepare(self.paths)
        plan = topology.plan(self.spec, lb_dns_names=self.lb_address().dns_names, lb_ips=self.lb_address().ips)
        return pki.adopt(plan, self.paths.pki)

    def renew_pki(self, before_days: int, *, keep_keys: bool = False) -> pki.PKI:
        """Re-issue every leaf expiring within `before_days` (new keys unless keep_keys), swapped in as one unit."""
        plan = topology.plan(self.spec, lb_dns_names=self.lb_address().dns_names, lb_ips=self.lb_address().ips)
        if not self.paths.pki.is_dir():
            raise PKIError(f"{self.paths.pki}: no PKI to renew yet; `bakery render` issues one")
        state.prepare(self.paths)
        return pki.ensure(plan, self.paths.pki, renew_before=before_days, keep_keys=keep_keys)

    def render_callback(self, *, ssh_authorized_keys: Sequence[str] = (), store: Callable[[], Store] | None = None) -> RenderCallback:
        """What providers call once their load balancer exists: records its names, renders,
        writes the trees and (user_data: store) publishes the cluster to `store()`, the
        provider's own view of the state store, before any master boots."""

        def callback(lb: LBAddress) -> dict[str, RenderedNode]:
            self.state = state.update(self.paths, lb={"dns_names": list(lb.dns_names), "ips": list(lb.ips),
                                                      **({"port": lb.port} if lb.port else {})})
            rendered = self.render(lb, ssh_authorized_keys=ssh_authorized_keys)
            write_nodes(self.paths, rendered)
            if self.spec.user_data == "store":
                self.publish(rendered, store() if store else None)
            return {
                name: RenderedNode(name=name, address=r.node.address, zone=r.node.zone, user_data=r.user_data, document=r.document)
                for name, r in rendered.nodes.items()
            }

        return callback


def write_nodes(paths: state.ClusterPaths, rendered: Rendered) -> list[Path]:
    """Write build/<cluster>/nodes/<node>/{user-data, user-data.encoded, files/...} and
    the admin kubeconfig (once the load balancer's address is known). Each node's tree is swapped in whole (bakery.output), folders
    0700 (they hold private keys)."""
    state.prepare(paths)
    output.make_dirs(paths.nodes, NODES_MODE)
    # Every node tree and a changed PKI as one step: all are staged before any is swapped
    # in, so a full disk or an error while writing leaves all of them as they were.
    trees = [pki.tree(rendered.pki)] if rendered.save_pki else []  # the PKI first: node trees refer to it
    for name, r in rendered.nodes.items():
        files = [("user-data", r.user_data.plain, 0o600)]
        if r.user_data.encoding != "plain":
            files.append((f"user-data.{r.user_data.encoding}", r.user_data.encoded, 0o600))
        files += [(f"files{f.path}", f.content, f.mode) for f in r.files]
        trees.append(output.Tree(paths.node(name), files, NODES_MODE))
    written = output.write_trees(trees)
    if rendered.save_pki:
        pki.saved(rendered.pki)
        written = written[1:]
    admin = rendered.pki.admin_kubeconfig()
    if admin is not None:  # the LB's address known (`up` renders again once it is)
        output.atomic_write(paths.base / "admin.kubeconfig", admin, 0o600)
    return written
