"""What bakery creates on GCE, as pure data: deterministic names and request bodies.

Bodies are plain dicts keyed by compute_v1's field names (`network_i_p`, `I_p_address`),
so this module needs no SDK and its output can be compared in tests. Resources that
take labels carry `bakery-cluster=<cluster>`; the kinds GCE gives no labels (firewalls,
health checks, backend services, instance groups, instance templates) carry the
description MARKER, which `down` and `status` list by.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from bakery.errors import Problem, ProviderError, RenderError
from bakery.render.userdata import LIMITS, UserData
from bakery.spec import ClusterSpec, GcpSpec
from bakery.topology import Node

LABEL_CLUSTER = "bakery-cluster"
LABEL_NODE = "bakery-node"
LABEL_ROLE = "bakery-role"
# Where Google's health-check probes come from. Internal passthrough NLBs probe from the
# first two ranges; external passthrough NLBs also from 209.85.152.0/22 and 209.85.204.0/22.
# https://cloud.google.com/load-balancing/docs/health-check-concepts#ip-ranges
HEALTH_CHECK_RANGES = ("35.191.0.0/16", "130.211.0.0/22")
EXTERNAL_NLB_PROBE_RANGES = ("209.85.152.0/22", "209.85.204.0/22")
METADATA_VALUE_LIMIT = LIMITS["gcp"]
METADATA_TOTAL_LIMIT = 512 * 1024
SCOPE_CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


def marker(cluster: str) -> str:
    return f"{LABEL_CLUSTER}={cluster}"


def label_filter(cluster: str) -> str:
    return f"labels.{LABEL_CLUSTER} = {cluster}"


def marker_filter(cluster: str) -> str:
    return f'description = "{marker(cluster)}"'


@dataclass(frozen=True)
class Names:
    """Every resource name of one cluster, derived from the cluster name alone."""

    cluster: str

    @property
    def lb(self) -> str:
        """The LB's address, health check, backend service, forwarding rule and API firewall."""
        return f"{self.cluster}-apiserver"

    @property
    def internal_firewall(self) -> str:
        return f"{self.cluster}-masters-internal"

    @property
    def health_check_firewall(self) -> str:
        return f"{self.cluster}-health-checks"

    @property
    def tag(self) -> str:
        """The masters' network tag, which the firewall rules target."""
        return f"{self.cluster}-master"

    def group(self, zone: str) -> str:
        return f"{self.cluster}-masters-{zone}"

    def mig(self, zone: str) -> str:
        """A zone's managed instance group (and the instance group GCE makes for it)."""
        return f"{self.cluster}-mig-{zone}"

    def base_instance(self, zone: str) -> str:
        """A managed group's instances are <this>-<4 random characters>. The zone's letter keeps two
        zones from ever giving two masters (and two etcd members) one hostname, and never reads
        like a fixed master's <cluster>-master-N."""
        return f"{self.cluster}-master-{zone.rsplit('-', 1)[-1]}"

    def is_template(self, name: str) -> bool:
        """One of the cluster's instance templates (`template` names them)."""
        return re.fullmatch(rf"{re.escape(self.cluster)}-master-[0-9a-f]{{10}}", name) is not None

    def template(self, body: dict[str, Any]) -> str:
        """Instance templates are immutable: the name carries a hash of the content."""
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.cluster}-master-{digest}"


class Layout:
    """Request bodies for one spec. Links are partial URLs GCE accepts (projects/...)."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.gcp: GcpSpec = spec.provider_spec  # type: ignore[assignment]
        self.names = Names(spec.name)
        self.project = self.gcp.project
        self.region = self.gcp.region
        self.internal = spec.load_balancer.scheme == "internal"
        self.scheme = "INTERNAL" if self.internal else "EXTERNAL"

    # links

    @property
    def network(self) -> str:
        n = self.gcp.network
        return n if "/" in n else f"projects/{self.project}/global/networks/{n}"

    @property
    def subnetwork(self) -> str | None:
        s = self.gcp.subnetwork
        if s is None:
            return None
        return s if "/" in s else f"projects/{self.project}/regions/{self.region}/subnetworks/{s}"

    def regional(self, collection: str, name: str) -> str:
        return f"projects/{self.project}/regions/{self.region}/{collection}/{name}"

    def zonal(self, zone: str, collection: str, name: str) -> str:
        return f"projects/{self.project}/zones/{zone}/{collection}/{name}"

    def image_link(self, image: str) -> str:
        return image if "/" in image else f"projects/{self.project}/global/images/{image}"

    def labels(self, **extra: str) -> dict[str, str]:
        return {LABEL_CLUSTER: self.spec.name, **extra}

    # bodies

    def lb_address(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.names.lb, "labels": self.labels(**{LABEL_ROLE: "lb"}), "address_type": self.scheme}
        if self.spec.load_balancer.ip:
            body["address"] = self.spec.load_balancer.ip
        if self.internal and self.subnetwork:
            body["subnetwork"] = self.subnetwork
        return body

    def master_address(self, node: Node) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": node.name,
            "labels": self.labels(**{LABEL_ROLE: "master", LABEL_NODE: node.name}),
            "address_type": "INTERNAL",
            "address": node.address,
        }
        if self.subnetwork:
            body["subnetwork"] = self.subnetwork
        return body

    def firewalls(self) -> list[dict[str, Any]]:
        port = str(self.spec.load_balancer.port)
        etcd = f"{self.spec.etcd.client_port}-{self.spec.etcd.peer_port}"
        common = {"network": self.network, "direction": "INGRESS", "description": marker(self.spec.name), "target_tags": [self.names.tag]}
        return [
            {**common, "name": self.names.internal_firewall, "source_tags": [self.names.tag],
             "allowed": [{"I_p_protocol": "tcp", "ports": [etcd, "10250"]}]},
            {**common, "name": self.names.lb, "source_ranges": list(self.spec.load_balancer.allowed_cidrs),
             "allowed": [{"I_p_protocol": "tcp", "ports": [port]}]},
            {**common, "name": self.names.health_check_firewall, "source_ranges": self.probe_ranges(),
             "allowed": [{"I_p_protocol": "tcp", "ports": [port]}]},
        ]

    def probe_ranges(self) -> list[str]:
        return list(HEALTH_CHECK_RANGES) + ([] if self.internal else list(EXTERNAL_NLB_PROBE_RANGES))

    def health_check(self) -> dict[str, Any]:
        return {
            "name": self.names.lb,
            "description": marker(self.spec.name),
            "type_": "TCP",
            "tcp_health_check": {"port": self.spec.load_balancer.port},
            "check_interval_sec": 5,
            "timeout_sec": 5,
            "healthy_threshold": 2,
            "unhealthy_threshold": 2,
        }

    def group(self, zone: str) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.names.group(zone), "description": marker(self.spec.name), "network": self.network}
        if self.subnetwork:
            body["subnetwork"] = self.subnetwork
        return body

    def backend_service(self, zones: list[str], managed: bool = False) -> dict[str, Any]:
        """Over each zone's unmanaged group, or (`managed`) each zone's managed group. A passthrough
        NLB's backend service takes no port name: the forwarding rule's port reaches the instances."""
        group = self.names.mig if managed else self.names.group
        body: dict[str, Any] = {
            "name": self.names.lb,
            "description": marker(self.spec.name),
            "load_balancing_scheme": self.scheme,
            "protocol": "TCP",
            "health_checks": [self.regional("healthChecks", self.names.lb)],
            "backends": [{"group": self.zonal(z, "instanceGroups", group(z)), "balancing_mode": "CONNECTION"} for z in zones],
        }
        if self.internal:
            body["network"] = self.network
        return body

    def mig(self, zone: str, template: str, size: int) -> dict[str, Any]:
        """One zone's managed instance group of `size` masters from the instance template `template`.

        - No autohealing health check: GCE already repairs a master that is deleted, stops or
          crashes (instanceLifecyclePolicy REPAIR), which is the machine-level check the masters
          need. A health check on the API server would recreate masters whose API server waits
          for etcd on first boot, or during a quorum loss, and a recreated master loses its etcd
          data: that turns a slow start or a short outage into a lost member.
        - forceUpdateOnRepair YES: a repaired master boots the group's current template, whose
          user-data names the cluster description now in the store (an old one's digest would
          no longer match).
        - updatePolicy OPPORTUNISTIC: a new template never replaces running masters by itself;
          `bakery rollout` replaces them one at a time, keeping etcd's quorum.
        - No named port: a passthrough NLB's backend service takes none.
        """
        return {
            "name": self.names.mig(zone),
            "description": marker(self.spec.name),
            "base_instance_name": self.names.base_instance(zone),
            "instance_template": f"projects/{self.project}/global/instanceTemplates/{template}",
            "target_size": size,
            "update_policy": {"type_": "OPPORTUNISTIC", "minimal_action": "REPLACE", "replacement_method": "SUBSTITUTE"},
            "instance_lifecycle_policy": {"force_update_on_repair": "YES", "default_action_on_failure": "REPAIR"},
        }

    def forwarding_rule(self, address: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.names.lb,
            "labels": self.labels(**{LABEL_ROLE: "lb"}),
            "I_p_address": address,
            "I_p_protocol": "TCP",
            "ports": [str(self.spec.load_balancer.port)],
            "load_balancing_scheme": self.scheme,
            "backend_service": self.regional("backendServices", self.names.lb),
        }
        if self.internal:
            body["network"] = self.network
            if self.subnetwork:
                body["subnetwork"] = self.subnetwork
        return body

    def _machine(self, image: str, user_data: UserData, labels: dict[str, str], node: str) -> dict[str, Any]:
        """What an instance and an instance template's properties share."""
        body: dict[str, Any] = {
            "disks": [{"boot": True, "auto_delete": True, "initialize_params": {
                "source_image": self.image_link(image), "disk_size_gb": self.gcp.boot_disk_gb, "labels": labels}}],
            "metadata": {"items": metadata_items(user_data, image, node)},
            "labels": labels,
            "tags": {"items": [self.names.tag]},
            "shielded_instance_config": {"enable_secure_boot": True, "enable_vtpm": True, "enable_integrity_monitoring": True},
        }
        from bakery.providers.gcp.iam import service_account  # iam.py imports this module

        # The spec's, or the one `up` makes with access to the store's bucket only (storage.py).
        body["service_accounts"] = [{"email": service_account(self.spec), "scopes": [SCOPE_CLOUD_PLATFORM]}]
        return body

    def instance(self, node: Node, image: str, user_data: UserData) -> dict[str, Any]:
        nic: dict[str, Any] = {"network": self.network, "network_i_p": node.address}
        if self.subnetwork:
            nic["subnetwork"] = self.subnetwork
        labels = self.labels(**{LABEL_ROLE: "master", LABEL_NODE: node.name})
        return {
            "name": node.name,
            "machine_type": f"zones/{node.zone}/machineTypes/{self.gcp.machine_type}",
            "network_interfaces": [nic],
            **self._machine(image, user_data, labels, node.name),
        }

    def instance_template(self, image: str, user_data: UserData) -> dict[str, Any]:
        """A template for managed instance groups: the cluster's small user-data, no fixed address."""
        nic: dict[str, Any] = {"network": self.network}
        if self.subnetwork:
            nic["subnetwork"] = self.subnetwork
        properties = {
            "machine_type": self.gcp.machine_type,
            "network_interfaces": [nic],
            **self._machine(image, user_data, self.labels(**{LABEL_ROLE: "master"}), ""),
        }
        body = {"description": marker(self.spec.name), "properties": properties}
        return {"name": self.names.template(body), **body}


def metadata_items(user_data: UserData, image: str, node: str) -> list[dict[str, str]]:
    """`user-data` (+ `user-data-encoding: base64`), checked against GCE's metadata limits first.

    GCE rejects one value over 256 KB and all values over 512 KB; bakery refuses before
    any call, naming the node, so nothing is half-created.
    """
    if user_data.encoding == "gzip":
        raise ProviderError(f"{node or 'template'}: user-data was encoded for AWS (gzip); render it for gcp")
    items = [{"key": "user-data", "value": user_data.encoded.decode("ascii" if user_data.encoding == "base64" else "utf-8")}]
    if user_data.encoding == "base64":
        items.append({"key": "user-data-encoding", "value": "base64"})
    items.append({"key": "bakery-image", "value": image})
    where = node or "instance template"
    size = len(user_data.encoded)
    if size > METADATA_VALUE_LIMIT:
        raise RenderError(
            f"{where}: user-data over the GCE metadata limit",
            [Problem(f"user-data is {size:,} bytes ({user_data.encoding}), over GCE's {METADATA_VALUE_LIMIT:,}-byte limit for one metadata value", key=where)],
        )
    total = sum(len(i["key"].encode()) + len(i["value"].encode()) for i in items)
    if total > METADATA_TOTAL_LIMIT:
        raise RenderError(
            f"{where}: metadata over the GCE limit",
            [Problem(f"metadata is {total:,} bytes in all, over GCE's {METADATA_TOTAL_LIMIT:,}-byte limit", key=where)],
        )
    return items

