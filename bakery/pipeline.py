"""The pipeline's steps wired together, for the CLI and the providers.

    cluster.yaml -> spec -> plan -> pki.ensure -> bootstrap -> render -> (write)

`Cluster.load` reads the spec and state; `Cluster.render(lb)` runs the pure steps
(issuing certificates for the load balancer's names first); `write_nodes` is the
only step that writes the rendered trees. Providers receive `Cluster.render_callback()`.
"""

from __future__ import annotations

import filecmp
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bakery import discovery, output, pki, render, spec, state, topology
from bakery.providers.base import LBAddress, RenderCallback, RenderedNode


@dataclass
class Rendered:
    plan: topology.ClusterPlan
    pki: pki.PKI
    nodes: dict[str, render.NodeRender]


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
        return LBAddress(tuple(lb.get("dns_names", ())), tuple(lb.get("ips", ())))

    def render(self, lb: LBAddress | None = None, *, provider: str | None = None, ssh_authorized_keys: Sequence[str] = (),
               keep_pki: bool = True) -> Rendered:
        """Plan, certificates (issued or checked for these LB names), and every node's files and user-data.

        Certificates are issued into a private staging copy of build/<cluster>/pki and
        copied back only when every node rendered (and only with keep_pki), so a spec
        that fails to render leaves the PKI as it was.
        """
        lb = lb or self.lb_address()
        plan = topology.plan(self.spec, lb_dns_names=lb.dns_names, lb_ips=lb.ips)
        bootstrap = discovery.bootstrap_for(self.spec, self.state)
        with tempfile.TemporaryDirectory(prefix="bakery-pki-") as tmp:
            staging = Path(tmp) / "pki"
            if self.paths.pki.is_dir():
                shutil.copytree(self.paths.pki, staging)
            keys = pki.ensure(plan, staging)
            nodes = render.render_cluster(plan, keys, bootstrap, provider=provider, ssh_authorized_keys=ssh_authorized_keys)
            if keep_pki:
                _sync_pki(staging, self.paths.pki)
                keys.folder = self.paths.pki
        return Rendered(plan, keys, nodes)

    def render_callback(self, *, ssh_authorized_keys: Sequence[str] = ()) -> RenderCallback:
        """What providers call once their load balancer exists: records its names, renders."""

        def callback(lb: LBAddress) -> dict[str, RenderedNode]:
            self.state = state.update(self.paths, lb={"dns_names": list(lb.dns_names), "ips": list(lb.ips)})
            rendered = self.render(lb, ssh_authorized_keys=ssh_authorized_keys)
            write_nodes(self.paths, rendered)
            return {
                name: RenderedNode(name=name, address=r.node.address, zone=r.node.zone, user_data=r.user_data)
                for name, r in rendered.nodes.items()
            }

        return callback


def write_nodes(paths: state.ClusterPaths, rendered: Rendered) -> list[Path]:
    """Write build/<cluster>/nodes/<node>/{user-data, user-data.encoded, files/...} and
    the admin kubeconfig. Each node's tree is swapped in whole (bakery.output)."""
    written = []
    for name, r in rendered.nodes.items():
        files = [("user-data", r.user_data.plain, 0o600)]
        if r.user_data.encoding != "plain":
            files.append((f"user-data.{r.user_data.encoding}", r.user_data.encoded, 0o600))
        files += [(f"files{f.path}", f.content, f.mode) for f in r.files]
        written.append(output.write_tree(paths.node(name), files))
    output.atomic_write(paths.base / "admin.kubeconfig", rendered.pki.admin_kubeconfig(), 0o600)
    return written


def _sync_pki(staging: Path, target: Path) -> None:
    """Copy new or changed PKI files from `staging` into `target`, each atomically, modes kept."""
    for src in sorted(staging.rglob("*")):
        if src.is_dir():
            continue
        dest = target / src.relative_to(staging)
        if dest.exists() and filecmp.cmp(src, dest, shallow=False):
            continue
        output.atomic_write(dest, src.read_bytes(), src.stat().st_mode & 0o777)
    for folder in [target, *(p for p in target.rglob("*") if p.is_dir())]:
        folder.chmod(pki.DIR_MODE)
