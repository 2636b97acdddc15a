"""Pure rendering: plan + PKI + bootstrap -> each master's files and user-data.

    render_cluster(plan, pki, bootstrap)    {node name: NodeRender}
    render_node(plan, node, pki, bootstrap) NodeRender(files, user_data)

The files come from the builders in builders.BUILDERS, in order; cloud_config()
turns them into one #cloud-config document; userdata.encode() fits it to the
provider's limit. Nothing here touches the disk (bakery.output writes).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from bakery.discovery import Bootstrap
from bakery.errors import RenderError
from bakery.pki import PKI
from bakery.render.builders import BUILDERS, NodeContext, NodeFile
from bakery.render.templates import render
from bakery.render.userdata import UserData, encode, gzip_bytes
from bakery.topology import ClusterPlan, Node

__all__ = ["NodeFile", "NodeRender", "cloud_config", "embedded_document", "node_user_data", "render_cluster", "render_node", "start_commands",
           "stop_etcd_commands"]

# Files above this size are written gzip+base64 when that is smaller (manifests
# compress ~4x; PEM does not, and stays plain).
GZIP_FILES_OVER = 4096
# The small user-data stays a pointer (kops' is ~3.9 KB): a quarter of AWS's 16 KB.
NODE_USER_DATA_BUDGET = 4096


@dataclass(frozen=True)
class NodeRender:
    node: Node
    files: tuple[NodeFile, ...]
    user_data: UserData  # what the node boots with: the cluster's small one, or `document` (embedded)
    document: bytes = b""  # the #cloud-config of the node's whole tree (review, validate, golden files)


def node_files(plan: ClusterPlan, node: Node, pki: PKI, bootstrap: Bootstrap) -> list[NodeFile]:
    ctx = NodeContext(plan, node, pki, bootstrap)
    files: list[NodeFile] = []
    for build in BUILDERS:
        files.extend(build(ctx))
    seen: set[str] = set()
    for f in files:
        if f.path in seen:
            raise RenderError(f"{node.name}: two builders declare {f.path}")
        seen.add(f.path)
    return files


def start_commands(plan: ClusterPlan) -> list[list[str]]:
    """What starts a master once its files are written (bakery-node runs these)."""
    spec = plan.spec
    if spec.runtime == "static-pods":
        return [
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", "containerd.service", "kubelet.service", "bakery-node-register.timer",
             "bakery-backup.timer"],
            ["systemctl", "restart", "monit.service"],
        ]
    units = ["etcd.service", "kube-apiserver.service"]
    if spec.election == "podmaster":
        # each podmaster starts its component's unit while it holds the lock
        units += ["podmaster-kube-scheduler.service", "podmaster-kube-controller-manager.service"]
    else:
        units += ["kube-scheduler.service", "kube-controller-manager.service"]
    wants = "/etc/systemd/system/multi-user.target.wants"
    # `systemctl enable` costs ~30 s under TCG; the symlinks are what it would create.
    timers = "/etc/systemd/system/timers.target.wants"
    timer_units = ["bakery-backup.timer", "bakery-node-register.timer"]
    links = " && ".join([*(f"ln -sf /etc/systemd/system/{u} {wants}/{u}" for u in units),
                         *(f"ln -sf /etc/systemd/system/{t} {timers}/{t}" for t in timer_units)])
    return [
        ["sh", "-c", f"mkdir -p {wants} {timers} && {links}"],
        ["systemctl", "daemon-reload"],
        # etcd is Type=notify and reports ready only at quorum: do not block cloud-init on it
        ["systemctl", "start", "--no-block", *units, *timer_units],
        ["systemctl", "restart", "--no-block", "monit.service"],
    ]


def stop_etcd_commands(plan: ClusterPlan) -> list[list[str]]:
    """What stops a master's etcd (before a restore moves its data dir aside): the
    kubelet stops a static pod whose manifest is gone; systemd stops the unit."""
    if plan.spec.runtime == "static-pods":
        return [["rm", "-f", "/etc/kubernetes/manifests/etcd.manifest"]]
    return [["systemctl", "stop", "etcd.service"]]


def _file_entry(f: NodeFile) -> dict[str, str]:
    entry = {"path": f.path, "owner": f.owner, "permissions": f"{f.mode:04o}", "encoding": "", "content": ""}
    if not f.content:
        return entry
    text = _literal_text(f.content)
    if text is not None and len(f.content) <= GZIP_FILES_OVER:
        entry["content"] = text
        return entry
    packed = base64.b64encode(gzip_bytes(f.content)).decode()
    if text is not None and len(packed) >= len(f.content):
        entry["content"] = text
    elif text is None and len(packed) >= len(base64.b64encode(f.content)):
        entry.update(encoding="b64", content=base64.b64encode(f.content).decode())
    else:
        entry.update(encoding="gz+b64", content=packed)
    return entry


def _literal_text(content: bytes) -> str | None:
    """The content as YAML literal block text, or None when a block would not round-trip."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if (
        not text.endswith("\n")
        or text.endswith("\n\n")
        or "\r" in text
        or "\t" in text
        or text[0] in " \n"
        or any(line != line.rstrip() for line in text.splitlines())
        or any(not (c.isprintable() or c == "\n") for c in text)
    ):
        return None
    return text


def cloud_config(hostname: str, files: Sequence[NodeFile], runcmd: list[list[str]], ssh_authorized_keys: Sequence[str] = ()) -> bytes:
    """The #cloud-config document that writes `files` and runs `runcmd`."""
    return render(
        "user-data.yaml.j2",
        hostname=hostname,
        files=[_file_entry(f) for f in files],
        runcmd=runcmd,
        ssh_authorized_keys=list(ssh_authorized_keys),
    ).encode()


def node_user_data(config_json: str, provider: str, *, ssh_authorized_keys: Sequence[str] = ()) -> UserData:
    """The one small user-data every master of a cluster boots with: the node config
    bakery-node reads (cluster, store URL, description digest) and the command that
    starts it. Nothing secret; the same bytes for every master, launch template and
    instance template of the cluster."""
    plain = render("node-user-data.yaml.j2", config=config_json, ssh_authorized_keys=list(ssh_authorized_keys)).encode()
    data = encode(plain, provider, node="every master", sizes={"/etc/bakery/node.json": len(config_json)})
    if len(data.encoded) > NODE_USER_DATA_BUDGET:
        raise RenderError(f"the masters' user-data is {len(data.encoded):,} bytes encoded, over bakery's budget of "
                          f"{NODE_USER_DATA_BUDGET:,} (the node config is {len(config_json):,} bytes, "
                          f"{len(ssh_authorized_keys)} ssh keys)")
    return data


def embedded_document(plan: ClusterPlan, node: Node, files: Sequence[NodeFile], ssh_authorized_keys: Sequence[str] = ()) -> bytes:
    """The #cloud-config that writes this node's whole tree and starts it: its user-data
    under `user_data: embedded`, and the golden files' pin of the tree bakery-node writes."""
    return cloud_config(node.name, files, start_commands(plan), ssh_authorized_keys)


def render_node(plan: ClusterPlan, node: Node, pki: PKI, bootstrap: Bootstrap, *, provider: str | None = None,
                ssh_authorized_keys: Sequence[str] = (), user_data: UserData | None = None) -> NodeRender:
    """The node's files, and the user-data it boots with: `user_data` (the cluster's small
    one) when given, else the embedded document, fitted to the provider's limit."""
    files = node_files(plan, node, pki, bootstrap)
    document = embedded_document(plan, node, files, ssh_authorized_keys)
    if user_data is None:
        sizes = {f.path: len(f.content) for f in files}
        user_data = encode(document, provider or plan.spec.provider, node=node.name, sizes=sizes)
    return NodeRender(node, tuple(files), user_data, document)


def render_cluster(plan: ClusterPlan, pki: PKI, bootstrap: Bootstrap, *, provider: str | None = None,
                   ssh_authorized_keys: Sequence[str] = (), user_data: UserData | None = None) -> dict[str, NodeRender]:
    """Every master's files and user-data. Raises RenderError (with a per-file size
    breakdown) before anything is written when an embedded one does not fit the
    provider's limit."""
    return {
        n.name: render_node(plan, n, pki, bootstrap, provider=provider, ssh_authorized_keys=ssh_authorized_keys,
                            user_data=user_data)
        for n in plan.nodes
    }
