"""One small builder per piece of node configuration, listed in order in BUILDERS.

Each builder takes the node's context and returns the files it declares; none
writes anything (STYLE.md #1, #2). To find where a file on a master comes from,
search for its path here.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Callable
from dataclasses import dataclass

import yaml

from bakery.discovery import Bootstrap
from bakery.pki import NODE_ETCD_PKI, NODE_PKI, NODE_RBAC_ADDON, NODE_SUPER_ADMIN, PKI
from bakery.render import configs, flags
from bakery.render.templates import render
from bakery.topology import ClusterPlan, Node


@dataclass(frozen=True)
class NodeFile:
    """A file on a master: absolute path, bytes, mode, owner."""

    path: str
    content: bytes
    mode: int = 0o644
    owner: str = "root:root"


@dataclass(frozen=True)
class NodeContext:
    plan: ClusterPlan
    node: Node
    pki: PKI
    bootstrap: Bootstrap

    @property
    def static_pods(self) -> bool:
        return self.plan.spec.runtime == "static-pods"

    @property
    def podmaster(self) -> bool:
        return self.plan.spec.election == "podmaster"


Builder = Callable[[NodeContext], list[NodeFile]]

ELECTED = ("kube-scheduler", "kube-controller-manager")
# static pod manifests and the kubelet's config and unit: 0600, as kubeadm and CIS 1.1.x / 4.1.x
MANIFEST_MODE = 0o600
ADMIN_CONF = "/etc/kubernetes/admin.conf"
# runtime: systemd runs the components' binaries from here (the local image installs them)
SYSTEMD_BIN = "/usr/local/bin"
SYSTEMD_UNITS = "/etc/systemd/system"
NODE_REGISTER = "/usr/local/sbin/bakery-node-register"


def _text(path: str, text: str, mode: int = 0o644) -> NodeFile:
    return NodeFile(path, text.encode(), mode)


def pki_files(ctx: NodeContext) -> list[NodeFile]:
    """Certificates, keys and kubeconfigs (keys and kubeconfigs 0600)."""
    return [NodeFile(path, content, mode) for path, content, mode in ctx.pki.node_files(ctx.node)]


def etcd_manifest(ctx: NodeContext) -> list[NodeFile]:
    """/etc/kubernetes/manifests/etcd.manifest (static pods) or etcd.service (systemd)."""
    if not ctx.static_pods:
        command = flags.etcd_command(ctx.plan, ctx.node, ctx.bootstrap, binary=f"{SYSTEMD_BIN}/etcd")
        return [_text("/etc/systemd/system/etcd.service", render("systemd/etcd.service.j2", name=ctx.node.name, command=command))]
    text = render(
        "manifests/etcd.manifest.j2",
        name=ctx.node.name,
        image=ctx.plan.spec.image_ref("etcd"),
        command=flags.etcd_command(ctx.plan, ctx.node, ctx.bootstrap),
        data_dir=flags.ETCD_DATA_DIR,
        pki_dir=NODE_ETCD_PKI,
        metrics_host=flags.local_host(ctx.node),
        metrics_port=flags.ETCD_METRICS_PORT,
    )
    return [_text(f"{flags.MANIFESTS}/etcd.manifest", text, MANIFEST_MODE)]


def _mount(name: str, path: str, read_only: bool = True, type_: str = "Directory") -> dict[str, object]:
    return {"name": name, "path": path, "read_only": read_only, "type": type_}


def _yaml(header: str, doc: dict[str, object]) -> str:
    return f"# {header}: rendered by bakery\n" + yaml.safe_dump(doc, sort_keys=False)


def _control_plane(ctx: NodeContext, component: str, command: list[str], port: int, scheme: str, probe_path: str,
                   conf: str | None, extra_mounts: tuple[dict[str, object], ...] = ()) -> str:
    """A component's static pod. Its command starts with the component's own binary, as
    kubeadm's do: CIS scanners find the component by that first word and read its flags
    (a log wrapper in front hid every flag from them). Logs: the kubelet's container logs
    (/var/log/pods, `crictl logs`)."""
    mounts = [_mount("pki", NODE_PKI)]
    if conf:
        mounts.insert(1, _mount("kubeconfig", conf, True, "File"))
    mounts += extra_mounts
    return render(
        "manifests/control-plane.manifest.j2",
        component=component,
        image=ctx.plan.spec.image_ref(component),
        command=command,
        port=port,
        scheme=scheme,
        probe_host=flags.local_host(ctx.node) if component != "kube-apiserver" else ctx.node.address,
        probe_path=probe_path,
        mounts=mounts,
    )


def _unit(component: str, command: list[str], after: str) -> NodeFile:
    """runtime: systemd: the component's unit, with the static pod's command line."""
    argv = [f"{SYSTEMD_BIN}/{command[0]}", *command[1:]]
    return _text(f"{SYSTEMD_UNITS}/{component}.service",
                 render("systemd/control-plane.service.j2", component=component, command=argv, after=after))


def apiserver_manifest(ctx: NodeContext) -> list[NodeFile]:
    """/etc/kubernetes/manifests/kube-apiserver.manifest: one replica per master behind the LB,
    with its audit policy (and, from 1.32, its AuthenticationConfiguration) in /etc/kubernetes/apiserver."""
    command = flags.apiserver_command(ctx.plan, ctx.node)
    if ctx.static_pods:
        mounts = (_mount("apiserver-config", configs.APISERVER_CONFIG), _mount("audit-log", flags.AUDIT_LOG, False, "FileOrCreate"))
        text = _control_plane(ctx, "kube-apiserver", command, ctx.plan.lb.port, "HTTPS", "/livez", None, mounts)
        out = [_text(f"{flags.MANIFESTS}/kube-apiserver.manifest", text, MANIFEST_MODE)]
    else:
        out = [_unit("kube-apiserver", command, after="etcd.service")]
    out.append(_text(configs.AUDIT_POLICY, render("apiserver/audit-policy.yaml.j2")))
    if configs.anonymous_by_config(ctx.plan):
        out.append(_text(configs.AUTHENTICATION_CONFIG, _yaml("API server authentication", configs.authentication_config(ctx.plan))))
    return out


def election_manifests(ctx: NodeContext) -> list[NodeFile]:
    """Scheduler and controller-manager: in the manifests folder (builtin election) or in
    /srv/kubernetes for the podmaster to copy, plus the podmaster itself."""
    commands = {
        "kube-scheduler": (flags.scheduler_command(ctx.plan, ctx.node), 10259, configs.SCHEDULER_KUBECONFIG,
                           (_mount("config", configs.SCHEDULER_CONFIG, True, "File"),)),
        "kube-controller-manager": (flags.controller_manager_command(ctx.plan, ctx.node), 10257, "/etc/kubernetes/controller-manager.conf", ()),
    }
    out = [_text(configs.SCHEDULER_CONFIG, _yaml("kube-scheduler configuration (--config)", configs.scheduler_config()))]
    if not ctx.static_pods:
        # systemd runs them; under podmaster election the podmaster starts and stops the
        # unit of the component whose lock it holds (bakery-podmaster --unit)
        out += [_unit(c, cmd, after="kube-apiserver.service") for c, (cmd, _port, _conf, _mounts) in commands.items()]
        if ctx.podmaster:
            for c in ELECTED:
                # the lock's token is a copy of the unit file in /run (gone at reboot)
                command = flags.podmaster_command(ctx.plan, ctx.node, c, source=SYSTEMD_UNITS, dest=flags.ELECTED_DEST,
                                                  binary=f"{SYSTEMD_BIN}/bakery-podmaster", unit=f"{c}.service",
                                                  suffix=".service")
                out.append(_text(f"{SYSTEMD_UNITS}/podmaster-{c}.service",
                                 render("systemd/podmaster.service.j2", component=c, command=command)))
        return out
    folder = flags.ELECTED_SOURCE if ctx.podmaster else flags.MANIFESTS
    out += [
        _text(f"{folder}/{c}.manifest", _control_plane(ctx, c, cmd, port, "HTTPS", "/healthz", conf, mounts), MANIFEST_MODE)
        for c, (cmd, port, conf, mounts) in commands.items()
    ]
    if ctx.podmaster:
        electors = [
            {"name": f"{c.removeprefix('kube-')}-elector", "command": flags.podmaster_command(ctx.plan, ctx.node, c, source=flags.ELECTED_SOURCE, dest=flags.MANIFESTS)}
            for c in ELECTED
        ]
        text = render("manifests/podmaster.manifest.j2", image=ctx.plan.spec.image_ref("podmaster"), electors=electors,
                      source=flags.ELECTED_SOURCE, dest=flags.MANIFESTS, pki_dir=NODE_ETCD_PKI)
        out.append(_text(f"{flags.MANIFESTS}/podmaster.manifest", text, MANIFEST_MODE))
    return out


def kubelet_files(ctx: NodeContext) -> list[NodeFile]:
    """KubeletConfiguration, its systemd unit and /etc/default/kubelet (static-pods runtime)."""
    if not ctx.static_pods:
        return []
    dns = str(ipaddress.IPv4Network(ctx.plan.spec.network.service_cidr).network_address + 10)
    return [
        _text(configs.KUBELET_CONFIG, render(
            "kubelet/kubelet-config.yaml.j2", static_pod_path=flags.MANIFESTS, client_ca=f"{NODE_PKI}/ca.crt",
            cluster_domain=ctx.plan.spec.network.dns_domain, cluster_dns=dns,
            taint_key=configs.CONTROL_PLANE_TAINT["key"], taint_effect=configs.CONTROL_PLANE_TAINT["effect"],
            tls_min_version=flags.TLS_MIN_VERSION, tls_cipher_suites=flags.TLS_CIPHER_SUITES), MANIFEST_MODE),
        _text("/etc/systemd/system/kubelet.service", render("kubelet/kubelet.service.j2"), MANIFEST_MODE),
        _text("/etc/default/kubelet", render("kubelet/default-kubelet.j2", args=flags.kubelet_args(ctx.plan, ctx.node)), MANIFEST_MODE),
    ]


def node_register(ctx: NodeContext) -> list[NodeFile]:
    """The control-plane label on this master's Node, set through the API as kubeadm does
    (the kubelet may not set it), and approval of this kubelet's serving certificate: a
    script on a timer, with kubectl (installed with the kubelet) and an admin kubeconfig
    that points at this master's own API server."""
    # runtime: systemd has no kubelet and so no Node; the script still applies the RBAC
    # addon, without which the admin kubeconfig has no rights
    server = f"https://{flags.local_host(ctx.node)}:{ctx.plan.lb.port}"
    script = render("node/bakery-node-register.sh.j2", node=ctx.node.name, node_sh=shlex.quote(ctx.node.name),
                    kubeconfig=ADMIN_CONF, super_admin=NODE_SUPER_ADMIN, rbac_addon=NODE_RBAC_ADDON,
                    labels=configs.CONTROL_PLANE_LABELS)
    return [
        NodeFile(ADMIN_CONF, ctx.pki.kubeconfig("admin", server, "admin"), 0o600),
        _text(NODE_REGISTER, script, 0o755),
        _text("/etc/systemd/system/bakery-node-register.service",
              render("node/bakery-node-register.service.j2", script=NODE_REGISTER, kubeconfig=ADMIN_CONF)),
        _text("/etc/systemd/system/bakery-node-register.timer", render("node/bakery-node-register.timer.j2")),
    ]


def monit_files(ctx: NodeContext) -> list[NodeFile]:
    """monit watches what systemd runs: kubelet and containerd, or etcd and the podmasters."""
    def proc(name: str, match: str, unit: str, checks: list[str]) -> NodeFile:
        return _text(f"/etc/monit/conf.d/{name}", render("monit/process.j2", name=name, match=match, unit=unit, checks=checks), 0o600)

    if ctx.static_pods:
        return [
            proc("kubelet", "/usr/bin/kubelet", "kubelet",
                 ['if failed host 127.0.0.1 port 10248 protocol http request "/healthz" for 3 cycles then restart']),
            proc("containerd", "/usr/bin/containerd", "containerd",
                 ["if failed unixsocket /run/containerd/containerd.sock for 3 cycles then restart"]),
        ]
    out = [proc("etcd", f"{SYSTEMD_BIN}/etcd", "etcd",
                [f"if failed host {flags.local_host(ctx.node)} port {flags.ETCD_METRICS_PORT} protocol http "
                 'request "/health?serializable=true" for 10 cycles then restart'])]
    if ctx.podmaster:
        out += [proc(f"podmaster-{c}", f"bakery-podmaster.*{c}.manifest", f"podmaster-{c}", []) for c in ELECTED]
    return out


def log_files(ctx: NodeContext) -> list[NodeFile]:
    """The audit log, created before the API server starts so that the static pod mounts
    a file rather than a new directory; it records who did what: readable by root only."""
    return [NodeFile(flags.AUDIT_LOG, b"", 0o600)]


BACKUP_UNITS = ("/etc/systemd/system/bakery-backup.service", "/etc/systemd/system/bakery-backup.timer")


def backup_timer(ctx: NodeContext) -> list[NodeFile]:
    """The hourly scheduled etcd backup (`bakery-node backup`; only the leader uploads)."""
    service, timer = BACKUP_UNITS
    return [_text(service, render("systemd/bakery-backup.service.j2", cluster=ctx.plan.name)),
            _text(timer, render("systemd/bakery-backup.timer.j2", cluster=ctx.plan.name, delay="15min"))]


BUILDERS: tuple[Builder, ...] = (
    pki_files,
    etcd_manifest,
    apiserver_manifest,
    election_manifests,
    kubelet_files,
    node_register,
    monit_files,
    log_files,
    backup_timer,
)
