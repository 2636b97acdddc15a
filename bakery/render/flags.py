"""Command lines of the control-plane components, built once, used everywhere.

The static pod manifests and the systemd units (runtime: systemd) render these same
lists, and the etcd cluster tests start real etcd from them, so a flag changes in
one place. Only current flags: the 2015 guide's insecure port, basic auth file,
--address and --admission-control are gone (spec.REMOVED_FLAGS, render.lint).
"""

from __future__ import annotations

import ipaddress

from bakery.discovery import Bootstrap
from bakery.errors import RenderError
from bakery.pki import NODE_ETCD_PKI, NODE_PKI
from bakery.render.configs import (
    AUDIT_POLICY,
    AUTHENTICATION_CONFIG,
    KUBELET_CONFIG,
    SCHEDULER_CONFIG,
    SCHEDULER_KUBECONFIG,
    anonymous_by_config,
)
from bakery.topology import ClusterPlan, Node, local_host

ETCD_DATA_DIR = "/var/etcd/data"
ETCD_METRICS_PORT = 2381
MANIFESTS = "/etc/kubernetes/manifests"
ELECTED_SOURCE = "/srv/kubernetes"  # podmaster copies from here into MANIFESTS
ELECTED_DEST = "/run/bakery/elected"  # runtime: systemd: the podmaster's copy marks the lock held
PODMASTER_TTL_SECS = 30
PODMASTER_SLEEP = "5s"

AUDIT_LOG = "/var/log/kube-apiserver-audit.log"
# Shipped by bakery's PKI with the CAs (front proxy) and the cluster's Secret key.
ENCRYPTION_CONFIG = f"{NODE_PKI}/encryption-config.yaml"
FRONT_PROXY_CA = f"{NODE_PKI}/front-proxy-ca.crt"
FRONT_PROXY_CLIENT = f"{NODE_PKI}/front-proxy-client"

# CIS 1.2.29/4.2.12: TLS 1.2 at least, and only AEAD suites with forward secrecy (Go
# picks the TLS 1.3 suites itself). The same list for every component and the kubelet.
TLS_MIN_VERSION = "VersionTLS12"
TLS_CIPHER_SUITES = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
)
TLS_FLAGS = (f"--tls-min-version={TLS_MIN_VERSION}", f"--tls-cipher-suites={','.join(TLS_CIPHER_SUITES)}")
# CIS 1.2.17-1.2.19: keep 30 days, 10 files of 100 MB.
AUDIT_LOG_MAXAGE, AUDIT_LOG_MAXBACKUP, AUDIT_LOG_MAXSIZE = 30, 10, 100

def wildcard_or_own(node: Node) -> str:
    """The API server's bind address: every interface on a real node; the node's own
    address when several nodes share one host on loopback addresses (tests)."""
    return node.address if ipaddress.ip_address(node.address).is_loopback else "0.0.0.0"


def _extra(args: dict[str, str]) -> list[str]:
    return [f"--{k.lstrip('-')}={v}" for k, v in sorted(args.items())]


def etcd_command(plan: ClusterPlan, node: Node, bootstrap: Bootstrap, binary: str = "etcd") -> list[str]:
    """etcd's argv for `node`: TLS for peers and clients, and the bootstrap mode's flags."""
    e = plan.spec.etcd
    client_urls = [node.client_url]
    if local_host(node) != node.address:
        client_urls.append(f"https://127.0.0.1:{e.client_port}")
    cmd = [
        binary,
        f"--name={node.name}",
        f"--data-dir={ETCD_DATA_DIR}",
        f"--listen-peer-urls={node.peer_url}",
        f"--initial-advertise-peer-urls={node.peer_url}",
        f"--listen-client-urls={','.join(client_urls)}",
        f"--advertise-client-urls={node.client_url}",
        f"--listen-metrics-urls=http://{local_host(node)}:{ETCD_METRICS_PORT}",
        f"--cert-file={NODE_ETCD_PKI}/server.crt",
        f"--key-file={NODE_ETCD_PKI}/server.key",
        f"--trusted-ca-file={NODE_ETCD_PKI}/ca.crt",
        "--client-cert-auth=true",
        f"--peer-cert-file={NODE_ETCD_PKI}/peer.crt",
        f"--peer-key-file={NODE_ETCD_PKI}/peer.key",
        f"--peer-trusted-ca-file={NODE_ETCD_PKI}/ca.crt",
        "--peer-client-cert-auth=true",
        f"--quota-backend-bytes={e.quota_backend_bytes}",
        "--auto-compaction-mode=periodic",
        "--auto-compaction-retention=1h",
        "--snapshot-count=10000",
    ]
    return cmd + _bootstrap_flags(plan, node, bootstrap)


def _bootstrap_flags(plan: ClusterPlan, node: Node, b: Bootstrap) -> list[str]:
    if b.cluster_state == "existing":
        # A replacement joins the running cluster after `member add`; discovery tokens
        # are for the first boot only.
        return [
            f"--initial-cluster={b.initial_cluster or plan.initial_cluster}",
            "--initial-cluster-state=existing",
        ]
    token = f"--initial-cluster-token={plan.name}"
    if b.mode == "static":
        return [f"--initial-cluster={plan.initial_cluster}", "--initial-cluster-state=new", token]
    if b.mode == "store":
        # The node that won the store's bootstrap claim starts alone; bakery-node adds
        # every other one as a learner and renders it with cluster_state "existing".
        return [f"--initial-cluster={b.initial_cluster or f'{node.name}={node.peer_url}'}", "--initial-cluster-state=new", token]
    if b.mode == "discovery":
        if not b.discovery_url:
            raise RenderError(
                "etcd.bootstrap is discovery but no discovery URL is known: "
                "run `bakery discovery new -f cluster.yaml` or set etcd.discovery_url"
            )
        # exit rather than become a proxy when the token is already full
        return [f"--discovery={b.discovery_url}", "--discovery-fallback=exit"]
    if b.mode == "discovery-v3":
        if not b.discovery_token:
            raise RenderError(
                "etcd.bootstrap is discovery-v3 but no token is known: "
                "run `bakery discovery new -f cluster.yaml` or set etcd.discovery_token"
            )
        return [
            f"--discovery-token={b.discovery_token}",
            f"--discovery-endpoints={','.join(b.discovery_endpoints)}",
            "--initial-cluster-state=new",
        ]
    return [f"--discovery-srv={b.srv_domain}", "--initial-cluster-state=new", token]


def apiserver_command(plan: ClusterPlan, node: Node) -> list[str]:
    spec = plan.spec
    net = spec.network
    return [
        "kube-apiserver",
        f"--advertise-address={node.address}",
        f"--bind-address={wildcard_or_own(node)}",
        f"--secure-port={plan.lb.port}",
        "--allow-privileged=true",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        *([f"--authentication-config={AUTHENTICATION_CONFIG}"] if anonymous_by_config(plan) else []),
        f"--client-ca-file={NODE_PKI}/ca.crt",
        f"--tls-cert-file={NODE_PKI}/apiserver.crt",
        f"--tls-private-key-file={NODE_PKI}/apiserver.key",
        *TLS_FLAGS,
        f"--kubelet-client-certificate={NODE_PKI}/apiserver-kubelet-client.crt",
        f"--kubelet-client-key={NODE_PKI}/apiserver-kubelet-client.key",
        f"--kubelet-certificate-authority={NODE_PKI}/ca.crt",
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        # the aggregation layer (metrics-server, API extensions): kubeadm's front proxy
        f"--requestheader-client-ca-file={FRONT_PROXY_CA}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-username-headers=X-Remote-User",
        f"--proxy-client-cert-file={FRONT_PROXY_CLIENT}.crt",
        f"--proxy-client-key-file={FRONT_PROXY_CLIENT}.key",
        f"--encryption-provider-config={ENCRYPTION_CONFIG}",
        f"--audit-policy-file={AUDIT_POLICY}",
        f"--audit-log-path={AUDIT_LOG}",
        f"--audit-log-maxage={AUDIT_LOG_MAXAGE}",
        f"--audit-log-maxbackup={AUDIT_LOG_MAXBACKUP}",
        f"--audit-log-maxsize={AUDIT_LOG_MAXSIZE}",
        f"--etcd-servers=https://{local_host(node)}:{spec.etcd.client_port}",
        f"--etcd-cafile={NODE_ETCD_PKI}/ca.crt",
        f"--etcd-certfile={NODE_PKI}/apiserver-etcd-client.crt",
        f"--etcd-keyfile={NODE_PKI}/apiserver-etcd-client.key",
        f"--service-account-issuer=https://kubernetes.default.svc.{net.dns_domain}",
        f"--service-account-key-file={NODE_PKI}/sa.pub",
        f"--service-account-signing-key-file={NODE_PKI}/sa.key",
        f"--service-cluster-ip-range={net.service_cidr}",
        # kube-apiserver refuses a loopback advertise address for the kubernetes Service's
        # endpoints ("may not be in the loopback range"): masters sharing one host on 127.x
        # addresses (tests) leave those endpoints alone
        f"--endpoint-reconciler-type={'none' if wildcard_or_own(node) != '0.0.0.0' else 'lease'}",
        "--profiling=false",
        *_extra(spec.apiserver.extra_args),
    ]


def scheduler_command(plan: ClusterPlan, node: Node) -> list[str]:
    conf = SCHEDULER_KUBECONFIG
    return [
        "kube-scheduler",
        f"--config={SCHEDULER_CONFIG}",
        f"--authentication-kubeconfig={conf}",
        f"--authorization-kubeconfig={conf}",
        f"--bind-address={local_host(node)}",
        *TLS_FLAGS,
        *_extra(plan.spec.scheduler.extra_args),
    ]


def controller_manager_command(plan: ClusterPlan, node: Node) -> list[str]:
    net = plan.spec.network
    conf = "/etc/kubernetes/controller-manager.conf"
    return [
        "kube-controller-manager",
        f"--kubeconfig={conf}",
        f"--authentication-kubeconfig={conf}",
        f"--authorization-kubeconfig={conf}",
        f"--client-ca-file={NODE_PKI}/ca.crt",
        f"--requestheader-client-ca-file={FRONT_PROXY_CA}",
        f"--bind-address={local_host(node)}",
        *TLS_FLAGS,
        "--leader-elect=true",
        f"--cluster-name={plan.name}",
        f"--cluster-signing-cert-file={NODE_PKI}/ca.crt",
        f"--cluster-signing-key-file={NODE_PKI}/ca.key",
        f"--root-ca-file={NODE_PKI}/ca.crt",
        f"--service-account-private-key-file={NODE_PKI}/sa.key",
        f"--service-cluster-ip-range={net.service_cidr}",
        f"--cluster-cidr={net.pod_cidr}",
        "--allocate-node-cidrs=true",
        "--use-service-account-credentials=true",
        "--controllers=*,bootstrap-signer-controller,token-cleaner-controller",
        "--profiling=false",
        *_extra(plan.spec.controller_manager.extra_args),
    ]


def podmaster_command(plan: ClusterPlan, node: Node, component: str, *, source: str, dest: str, binary: str = "bakery-podmaster",
                      unit: str | None = None, suffix: str = ".manifest") -> list[str]:
    """The podmaster that holds `component`'s lock and copies its manifest while it does
    (and, with `unit`, runs that systemd unit while it does)."""
    return [
        binary,
        f"--etcd-servers=https://{local_host(node)}:{plan.spec.etcd.client_port}",
        f"--etcd-cafile={NODE_ETCD_PKI}/ca.crt",
        f"--etcd-certfile={NODE_ETCD_PKI}/healthcheck-client.crt",
        f"--etcd-keyfile={NODE_ETCD_PKI}/healthcheck-client.key",
        f"--key=/bakery/{plan.name}/podmaster/{component}",
        f"--whoami={node.name}",
        f"--ttl-secs={PODMASTER_TTL_SECS}",
        f"--sleep={PODMASTER_SLEEP}",
        f"--source-file={source}/{component}{suffix}",
        f"--dest-file={dest}/{component}{suffix}",
        *([f"--unit={unit}"] if unit else []),
    ]


def kubelet_args(plan: ClusterPlan, node: Node) -> list[str]:
    """No --node-labels: a 1.31 kubelet exits on node-role.kubernetes.io/* there, and
    NodeRestriction forbids it anyway; builders.node_register sets the labels through the
    API. The taint is registerWithTaints in the config file (configs.CONTROL_PLANE_TAINT)."""
    return [
        f"--config={KUBELET_CONFIG}",
        "--kubeconfig=/etc/kubernetes/kubelet.conf",
        f"--node-ip={node.address}",
        f"--hostname-override={node.name}",
    ]
