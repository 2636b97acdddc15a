"""Config files the components read (beside their command lines in flags.py): where they
live and what they say, as data the builders serialise.

The scheduler's settings moved here from flags deprecated in 1.31; the API server's
AuthenticationConfiguration limits anonymous requests to the health endpoints.
"""

from __future__ import annotations

from bakery.topology import ClusterPlan

KUBELET_CONFIG = "/etc/kubernetes/kubelet-config.yaml"
SCHEDULER_CONFIG = "/etc/kubernetes/kube-scheduler-config.yaml"
SCHEDULER_KUBECONFIG = "/etc/kubernetes/scheduler.conf"
# Files the API server reads besides its PKI (mounted read-only as one folder).
APISERVER_CONFIG = "/etc/kubernetes/apiserver"
AUDIT_POLICY = f"{APISERVER_CONFIG}/audit-policy.yaml"
AUTHENTICATION_CONFIG = f"{APISERVER_CONFIG}/authentication-config.yaml"

# Anonymous requests limited to these paths: AWS's target group health check (/readyz)
# and health probes carry no credentials.
ANONYMOUS_PATHS = ("/livez", "/readyz", "/healthz")
# Control-plane Node label and taint, as kubeadm sets them.
CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node.kubernetes.io/exclude-from-external-load-balancers")
CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


def _minor(plan: ClusterPlan) -> tuple[int, int]:
    major, minor = plan.spec.kubernetes_minor.split(".")
    return int(major), int(minor)


def anonymous_by_config(plan: ClusterPlan) -> bool:
    """AuthenticationConfiguration's anonymous `conditions` (AnonymousAuthConfigurableEndpoints,
    KEP-4633) are beta and on by default from 1.32 (kubernetes/kubernetes#127009), GA in 1.34;
    in 1.31 they are alpha behind a gate, so 1.31 keeps --anonymous-auth at its default
    (README: Hardening)."""
    return _minor(plan) >= (1, 32)


def authentication_config(plan: ClusterPlan) -> dict[str, object]:
    """Anonymous requests only to the health endpoints (v1beta1 until 1.33, v1 from 1.34)."""
    return {
        "apiVersion": "apiserver.config.k8s.io/v1" if _minor(plan) >= (1, 34) else "apiserver.config.k8s.io/v1beta1",
        "kind": "AuthenticationConfiguration",
        "anonymous": {"enabled": True, "conditions": [{"path": p} for p in ANONYMOUS_PATHS]},
    }


def scheduler_config() -> dict[str, object]:
    """The KubeSchedulerConfiguration behind --config: since 1.31 the scheduler's
    --kubeconfig and --profiling flags are deprecated and ignored next to --config."""
    return {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": SCHEDULER_KUBECONFIG},
        # also in podmaster mode: a second guard if two copies ever run at once
        "leaderElection": {"leaderElect": True},
        "enableProfiling": False,
        "enableContentionProfiling": False,
    }
