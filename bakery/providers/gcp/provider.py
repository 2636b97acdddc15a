"""GCP: masters behind a regional passthrough network load balancer.

With `gcp.masters: mig` (the default) the masters are managed instance groups: groups.py.
With `gcp.masters: instances`, `up` runs four waves; the calls inside a wave are independent and run in parallel:

    1. static addresses: the LB's (EXTERNAL or INTERNAL per spec) and one INTERNAL per master
       -> render(LBAddress(ips=(lb address,))): the address is in the API server certificate
    2. firewall rules, the region health check, one unmanaged instance group per zone,
       the instances (plan's networkIP, golden image, user-data metadata, labels, tags, shielded VM)
    3. each zone's instances added to its group; the region backend service over the groups
    4. the forwarding rule on the LB address

Every resource has a deterministic name (resources.Names) and is fetched before it is
inserted; `alreadyExists` (another run got there between the two) means fetch and
reuse. So a second `up` makes no insert, and an `up` interrupted anywhere converges on
the next run. `down` deletes what carries the cluster's label or marker, in reverse.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass
from typing import Any, TypeVar

from bakery import state
from bakery.bake import images
from bakery.errors import BakeryError, ProviderError
from bakery.providers.base import (
    ClusterStatus,
    LBAddress,
    Ledger,
    NodeStatus,
    Progress,
    RenderCallback,
    RenderedNode,
    UpResult,
    no_progress,
)
from bakery.providers.gcp import groups, path
from bakery.providers.gcp import storage as gcp_storage
from bakery.providers.gcp.api import Compute, endpoint_url, reset_thread_calls, thread_calls
from bakery.providers.gcp.resources import LABEL_CLUSTER, Layout, label_filter, marker_filter
from bakery.render.userdata import UserData
from bakery.spec import ClusterSpec
from bakery.state import ClusterPaths
from bakery.store import Store, location, open_store
from bakery.topology import Node, plan

T = TypeVar("T")


@dataclass(frozen=True)
class Kind:
    """How one GCE resource kind is addressed through compute_v1."""

    client: str  # compute_v1 client name without "Client"
    message: str  # compute_v1 resource message
    field: str  # the name argument of get/delete, e.g. "health_check"
    scope: str  # "global", "regional" or "zonal"
    list_request: str


KINDS = {
    "address": Kind("Addresses", "Address", "address", "regional", "ListAddressesRequest"),
    "firewall": Kind("Firewalls", "Firewall", "firewall", "global", "ListFirewallsRequest"),
    "instance": Kind("Instances", "Instance", "instance", "zonal", "ListInstancesRequest"),
    "health check": Kind("RegionHealthChecks", "HealthCheck", "health_check", "regional", "ListRegionHealthChecksRequest"),
    "backend service": Kind("RegionBackendServices", "BackendService", "backend_service", "regional", "ListRegionBackendServicesRequest"),
    "instance group": Kind("InstanceGroups", "InstanceGroup", "instance_group", "zonal", "ListInstanceGroupsRequest"),
    "forwarding rule": Kind("ForwardingRules", "ForwardingRule", "forwarding_rule", "regional", "ListForwardingRulesRequest"),
    "instance template": Kind("InstanceTemplates", "InstanceTemplate", "instance_template", "global", "ListInstanceTemplatesRequest"),
    "instance group manager": Kind("InstanceGroupManagers", "InstanceGroupManager", "instance_group_manager", "zonal",
                                   "ListInstanceGroupManagersRequest"),
}
# Kinds whose insert does not keep `labels`: Google's reference for addresses and forwarding
# rules says they "can only be added or modified by the setLabels method" (with the resource's
# labelFingerprint). Instances, disks and instance templates keep them; firewalls, health
# checks, backend services, instance groups and their managers have none (the MARKER).
LABELS_BY_SET_LABELS = ("address", "forwarding rule")
HEALTH_TIMEOUT = 600.0
GROUP_TIMEOUT = 900.0  # a MIG's instances are created (and deleted) within minutes; more means a quota or an image problem


def _closes_clients(method: Callable[..., T]) -> Callable[..., T]:
    """Close the HTTP sessions when a command ends (they hold sockets; a nightly job that
    runs many commands in one process would otherwise pile them up)."""

    @functools.wraps(method)
    def wrapper(self: GcpProvider, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        finally:
            self.compute.close()

    return wrapper


class GcpProvider:
    name = "gcp"

    def __init__(
        self,
        spec: ClusterSpec,
        paths: ClusterPaths,
        progress: Progress = no_progress,
        *,
        compute: Compute | None = None,
        health_timeout: float = HEALTH_TIMEOUT,
        group_timeout: float = GROUP_TIMEOUT,
        poll_seconds: float = 5.0,
    ) -> None:
        self.spec = spec
        self.paths = paths
        self.progress = _serialized(progress)
        self.layout = Layout(spec)
        self.names = self.layout.names
        self.compute = compute or Compute(self.layout.project, endpoint_url(self.layout.gcp.endpoint_url))
        self.health_timeout = health_timeout
        self.group_timeout = group_timeout
        self.poll_seconds = poll_seconds
        # (wave, longest chain of API calls inside it): bench/up.py's critical-path floor
        self.trace: list[tuple[str, int]] = []
        self.ledger = Ledger(self.progress)

    # -- up ----------------------------------------------------------------------------

    @_closes_clients
    def up(self, render: RenderCallback, *, wait: bool = False) -> UpResult:
        self.ledger = Ledger(self.progress)
        self.trace = []
        if self.layout.gcp.masters == "mig":
            return groups.up(self, render, wait=wait)
        image = self.image()  # before any call: no image means nothing to boot
        nodes = plan(self.spec).nodes
        zones = list(dict.fromkeys(n.zone for n in nodes))
        L = self.layout
        lb_ip = self._lb_and_store(nodes)

        rendered = render(LBAddress(ips=(lb_ip,)))
        missing = [n.name for n in nodes if n.name not in rendered]
        if missing:
            raise ProviderError(f"gcp: the render produced no user-data for {', '.join(missing)}")
        # Bodies first: the metadata limits are checked here, before any instance call.
        instances = {n.name: L.instance(n, image, rendered[n.name].user_data) for n in nodes}
        zone_of = {n.name: n.zone for n in nodes}

        wave2: dict[str, Callable[[], Any]] = {
            f"firewall {fw['name']}": (lambda fw=fw: self._ensure_firewall(fw)) for fw in L.firewalls()
        }
        wave2["health check"] = lambda: self._ensure("health check", L.health_check())
        for z in zones:
            wave2[f"group {z}"] = lambda z=z: self._ensure("instance group", L.group(z), zone=z)
        for name, body in instances.items():
            wave2[name] = lambda name=name, body=body: self._ensure("instance", body, zone=zone_of[name])
        made = self._wave("firewalls, health check, groups, instances", wave2)
        for name, body in instances.items():
            self._check_drift(made[name], body)

        wave3: dict[str, Callable[[], Any]] = {
            f"members {z}": (lambda z=z: self._ensure_members(z, [n.name for n in nodes if n.zone == z])) for z in zones
        }
        wave3["backend service"] = lambda: self._ensure("backend service", L.backend_service(zones))
        svc = self._wave("group members, backend service", wave3)["backend service"]
        serving = sorted(_last(b.group) for b in svc.backends)
        if svc.load_balancing_scheme != L.scheme or serving != sorted(self.names.group(z) for z in zones):
            self.ledger.drifted(
                f"backend service {svc.name} is {svc.load_balancing_scheme} over {', '.join(serving) or 'no groups'}; "
                f"the spec asks for {L.scheme} over the groups of {', '.join(zones)}: `bakery down` then `bakery up` to rebuild the load balancer"
            )

        rule = self._wave("forwarding rule", {"rule": lambda: self._ensure("forwarding rule", L.forwarding_rule(lb_ip))})["rule"]
        if rule.I_p_address != lb_ip:
            self.ledger.drifted(f"forwarding rule {rule.name} serves {rule.I_p_address}, not the reserved {lb_ip}: delete it and rerun `bakery up`")
        groups.leftover_groups_drift(self, self._zones())

        endpoint = self._endpoint(lb_ip)
        self._record(
            lb_address=lb_ip,
            endpoint=endpoint,
            project=L.project,
            region=L.region,
            scheme=L.scheme,
            zones=zones,
            instances={n.name: {"id": str(made[n.name].id), "zone": n.zone, "address": n.address} for n in nodes},
            resources=sorted(self.ledger.created + self.ledger.existing),
        )
        if wait:
            self._wait_healthy(zones, [n.name for n in nodes])
        return UpResult(created=self.ledger.created, existing=self.ledger.existing, drift=self.ledger.drift, endpoint=endpoint)

    def _lb_and_store(self, masters: list[Node]) -> str:
        """Wave 1: the store, the LB's address and each of `masters`' reserved address; return the LB's."""
        L = self.layout
        path.ensure(self)  # before anything boots: masters must reach the store (bakery/providers/gcp/path.py)
        addresses = self._wave("addresses, store", {
            # The store and the masters' service account exist before any master boots.
            "store": lambda: gcp_storage.ensure(self.spec, self.ledger),
            "lb": lambda: self._ensure("address", L.lb_address()),
            **{n.name: (lambda n=n: self._ensure("address", L.master_address(n))) for n in masters},
        })
        lb_ip: str = addresses["lb"].address
        if addresses["lb"].address_type != L.scheme:
            self.ledger.drifted(
                f"address {self.names.lb} is {addresses['lb'].address_type} but load_balancer.scheme asks for {L.scheme}: "
                "to switch, `bakery down` then `bakery up` (the API server certificate changes with the address)"
            )
        for n in masters:
            if addresses[n.name].address != n.address:
                raise ProviderError(
                    f"gcp: address {n.name} holds {addresses[n.name].address}, but the plan gives {n.name} {n.address}; "
                    "delete that address (or run `bakery down`) and rerun `bakery up`"
                )
        self._record(lb_address=lb_ip, endpoint=self._endpoint(lb_ip))
        store = addresses["store"]
        state.update(self.paths, store={"url": store.url, "owned": store.owned, "service_account": store.service_account})
        return lb_ip

    @property
    def cattle(self) -> bool:
        """Masters in managed groups boot one user-data: a rollout surges (bakery/surge.py)."""
        return self.layout.gcp.masters == "mig"

    def group(self) -> groups.MigGroup:
        return groups.MigGroup(self)

    @_closes_clients
    def replace_master(self, node: RenderedNode) -> None:
        """Rollout step: delete the master's instance and insert it again (same name, same
        reserved address, the current image, `node`'s user-data), back in its zone's group.
        GCE drops a deleted instance from its unmanaged instance group by itself."""
        if self.layout.gcp.masters == "mig":
            raise ProviderError("gcp: gcp.masters: mig: a group's masters have no fixed name to replace in place; "
                                "`bakery rollout` surges the group instead (one new master, then the old one retired)")
        n = plan(self.spec).node(node.name)
        body = self.layout.instance(n, self.image(), node.user_data)  # metadata limits checked first
        c = self.compute
        k = KINDS["instance"]
        if self._get("instance", node.name, n.zone) is not None:
            what = f"delete instance {node.name}"
            self.progress(f"instance {node.name}", "deleting")
            op = c.call(what, c.client(k.client).delete_unary, allow=(), **self._scope(k, n.zone), **{k.field: node.name})
            c.wait(op, what)
        self._ensure("instance", body, zone=n.zone)
        self._ensure_members(n.zone, [node.name])

    def image(self) -> str:
        """The golden image: the spec's gcp.image, else the one `bakery bake` recorded."""
        if self.layout.gcp.image:
            return self.layout.gcp.image
        found = _image_from(self.paths.images, self.spec.name)
        if not found:
            raise ProviderError(
                f"gcp: no image: set gcp.image in the spec, or run `bakery bake -f <spec> --only gcp` "
                f"(which records it in {self.paths.images})"
            )
        return found

    def _ensure_members(self, zone: str, names: list[str]) -> None:
        c = self.compute
        group = self.names.group(zone)
        request = c.types.ListInstancesInstanceGroupsRequest(project=self.layout.project, zone=zone, instance_group=group)
        listed = c.list(f"list members of instance group {group}", c.client("InstanceGroups").list_instances, request)
        present = {_last(m.instance) for m in listed}
        refs = [{"instance": self.layout.zonal(zone, "instances", n)} for n in names if n not in present]
        if not refs:
            self.ledger.found("members of", group)
            return
        what = f"add {', '.join(_last(r['instance']) for r in refs)} to instance group {group}"
        op = c.call(what, c.client("InstanceGroups").add_instances_unary, allow=(), project=self.layout.project, zone=zone,
                    instance_group=group,
                    instance_groups_add_instances_request_resource=c.types.InstanceGroupsAddInstancesRequest(instances=refs))
        c.wait(op, what)
        self.ledger.made("members of", group)

    def _ensure_firewall(self, body: dict[str, Any]) -> Any:
        """Firewall rules are configuration, not nodes: when the spec's ranges or ports
        changed (say, load_balancer.allowed_cidrs), patch the rule in place."""
        fw = self._ensure("firewall", body)
        have = {
            "source_ranges": sorted(fw.source_ranges),
            "source_tags": sorted(fw.source_tags),
            "target_tags": sorted(fw.target_tags),
            "allowed": sorted((a.I_p_protocol, tuple(a.ports)) for a in fw.allowed),
        }
        want = {
            "source_ranges": sorted(body.get("source_ranges", [])),
            "source_tags": sorted(body.get("source_tags", [])),
            "target_tags": sorted(body["target_tags"]),
            "allowed": sorted((a["I_p_protocol"], tuple(a["ports"])) for a in body["allowed"]),
        }
        if have == want:
            return fw
        c = self.compute
        what = f"update firewall {body['name']}"
        self.progress(f"firewall {body['name']}", "updating")
        op = c.call(what, c.client("Firewalls").patch_unary, allow=(), project=self.layout.project,
                    firewall=body["name"], firewall_resource=c.types.Firewall(body))
        c.wait(op, what)
        self.ledger.made("firewall rules of", body["name"])
        return fw

    def _check_drift(self, instance: Any, body: dict[str, Any]) -> None:
        have = {i.key: i.value for i in instance.metadata.items}
        want = {i["key"]: i["value"] for i in body["metadata"]["items"]}
        if have.get("user-data") != want["user-data"]:
            self.ledger.drifted(
                f"instance {instance.name}: its user-data differs from the rendered one; replace it with a rollout "
                "(bakery does not replace a running master silently)"
            )
        ips = [nic.network_i_p for nic in instance.network_interfaces]
        if body["network_interfaces"][0]["network_i_p"] not in ips:
            self.ledger.drifted(f"instance {instance.name}: address {ips} is not the plan's {body['network_interfaces'][0]['network_i_p']}")

    def _wait_healthy(self, zones: list[str], names: list[str]) -> None:
        deadline = time.monotonic() + self.health_timeout
        while True:
            health = self._health(zones)
            unhealthy = [n for n in names if health.get(n) != "HEALTHY"]
            for n in names:
                self.progress(f"instance {n}", (health.get(n) or "unknown").lower())
            if not unhealthy:
                return
            if time.monotonic() > deadline:
                raise ProviderError(
                    f"gcp: {', '.join(unhealthy)} not healthy behind {self.names.lb} after {self.health_timeout:.0f}s; "
                    "see `bakery status` and the instances' serial console"
                )
            time.sleep(self.poll_seconds)

    # -- instance template -------------------------------------------------------------

    @_closes_clients
    def instance_template(self, user_data: UserData) -> str:
        """Find or create the instance template for managed instance groups; return its name."""
        self.ledger = Ledger(self.progress)
        body = self.layout.instance_template(self.image(), user_data)
        tpl = self._ensure("instance template", body)
        self._record(instance_template=tpl.name)
        return tpl.name

    # -- status ------------------------------------------------------------------------

    @_closes_clients
    def store(self) -> Store:
        """The cluster's GCS store (its endpoint override, as the provider's own calls use)."""
        return open_store(location.store_url(self.spec))

    def status(self) -> ClusterStatus:
        zones = self._zones()
        found = self._wave("status", {
            **{f"instances {z}": (lambda z=z: self._list("instance", label_filter(self.spec.name), zone=z)) for z in zones},
            "rule": lambda: self._get("forwarding rule", self.names.lb),
            "health": lambda: self._health(zones),
        })
        health: dict[str, str] = found["health"]
        nodes = []
        for z in zones:
            for inst in found[f"instances {z}"]:
                meta = {i.key: i.value for i in inst.metadata.items}
                nodes.append(NodeStatus(
                    name=inst.name,
                    id=str(inst.id),
                    address=inst.network_interfaces[0].network_i_p if inst.network_interfaces else None,
                    zone=z,
                    state=inst.status,
                    health=(health.get(inst.name) or "unknown").lower(),
                    image=meta.get("bakery-image"),
                ))
        rule = found["rule"]
        endpoint = self._endpoint(rule.I_p_address) if rule else None
        extra = {"forwarding_rule": rule.name if rule else None, "address": rule.I_p_address if rule else None,
                 "scheme": self.layout.scheme, "region": self.layout.region, "masters": self.layout.gcp.masters}
        managed = groups.status_extra(self, zones, nodes)
        if managed:
            extra["groups"] = managed
        return ClusterStatus(self.spec.name, "gcp", endpoint, sorted(nodes, key=lambda n: n.name), extra)

    def _health(self, zones: list[str]) -> dict[str, str]:
        """instance name -> GCE health state, as the backend service sees it ({} before it exists)."""
        c = self.compute
        svc = self._get("backend service", self.names.lb)
        if svc is None:
            return {}
        out: dict[str, str] = {}
        for b in svc.backends:
            h = c.call(f"health of {_last(b.group)}", c.client("RegionBackendServices").get_health, allow=(),
                       project=self.layout.project, region=self.layout.region, backend_service=self.names.lb,
                       resource_group_reference_resource=c.types.ResourceGroupReference(group=b.group))
            out.update({_last(s.instance): s.health_state for s in h.health_status})
        return out

    # -- down --------------------------------------------------------------------------

    @_closes_clients
    def down(self, purge: bool = False) -> list[str]:
        """Delete what carries the cluster's label or marker, in reverse dependency order;
        then the masters' service account and bucket bindings. The bucket stays unless `purge`."""
        self.ledger = Ledger(self.progress)
        self.trace = []
        c = self.spec.name
        zones = self._zones()
        labelled, marked = label_filter(c), marker_filter(c)
        self._wave("forwarding rule, instances, firewalls", {
            "rules": lambda: self._delete_all("forwarding rule", labelled, named=[self.names.lb]),
            # a MIG's instances go with their MIG: deleting one alone would only have it repaired
            **{f"instances {z}": (lambda z=z: self._delete_all("instance", labelled, zone=z, skip=groups.is_managed)) for z in zones},
            "firewalls": lambda: self._delete_all("firewall", marked),
        })
        self._wave("backend service", {"svc": lambda: self._delete_all("backend service", marked)})
        # GCE refuses to delete a MIG whose group is still a backend, and a template a MIG uses
        self._wave("managed instance groups", {
            f"migs {z}": (lambda z=z: self._delete_all("instance group manager", marked, zone=z, timeout=self.group_timeout)) for z in zones
        })
        self._wave("templates, health check, groups, addresses", {
            "templates": lambda: self._delete_all("instance template", marked),
            "hc": lambda: self._delete_all("health check", marked),
            **{f"groups {z}": (lambda z=z: self._delete_all("instance group", marked, zone=z)) for z in zones},
            "addresses": lambda: self._delete_all("address", labelled,
                                                  named=[self.names.lb, *(n.name for n in plan(self.spec).nodes)]),
        })
        gcp_storage.delete(self.spec, self.ledger, purge=purge)
        data = state.load(self.paths)
        data.pop("gcp", None)
        if purge:
            data.pop("store", None)
        state.save(self.paths, data)
        return self.ledger.deleted

    def _delete_all(self, kind: str, flt: str, zone: str | None = None, *, skip: Callable[[Any], bool] | None = None,
                    timeout: float | None = None, named: Sequence[str] = ()) -> None:
        """Delete what `flt` lists, and of `named` (bakery's own names for a kind labelled after
        create) what carries no label at all: an `up` stopped between an insert and its setLabels."""
        items = [i for i in self._list(kind, flt, zone=zone) if not (skip and skip(i))]
        listed = {i.name for i in items}
        for name in (n for n in named if n not in listed):
            found = self._get(kind, name, zone)
            if found is not None and not dict(found.labels):
                items.append(found)
        if not items:
            return
        k = KINDS[kind]
        client = self.compute.client(k.client)
        ops = []
        failure: ProviderError | None = None
        for item in items:
            self.progress(f"{kind} {item.name}", "deleting")
            try:
                op = self.compute.call(f"delete {kind} {item.name}", client.delete_unary, allow=("NotFound",),
                                       **self._scope(k, zone), **{k.field: item.name})
            except self.compute.exceptions.NotFound:
                continue  # gone between the list and the delete
            except ProviderError as e:
                failure = e  # still wait for (and report) the deletes already accepted
                break
            ops.append((item.name, op))
        for name, op in ops:
            self.compute.wait(op, f"delete {kind} {name}", **({"timeout": timeout} if timeout else {}))
            self.ledger.gone(kind, name)
        if failure:
            raise failure

    # -- generic resource calls --------------------------------------------------------

    def _scope(self, k: Kind, zone: str | None) -> dict[str, str]:
        kw = {"project": self.layout.project}
        if k.scope == "regional":
            kw["region"] = self.layout.region
        elif k.scope == "zonal":
            assert zone, k
            kw["zone"] = zone
        return kw

    def _get(self, kind: str, name: str, zone: str | None = None) -> Any | None:
        k = KINDS[kind]
        return self.compute.get(f"get {kind} {name}", self.compute.client(k.client).get, **self._scope(k, zone), **{k.field: name})

    def _list(self, kind: str, flt: str, zone: str | None = None) -> list[Any]:
        k = KINDS[kind]
        request = getattr(self.compute.types, k.list_request)(filter=flt, max_results=500, **self._scope(k, zone))
        return self.compute.list(f"list {kind}s", self.compute.client(k.client).list, request)

    def _ensure(self, kind: str, body: dict[str, Any], zone: str | None = None) -> Any:
        """Fetch the resource by name; insert it when GCE says notFound; alreadyExists: fetch and reuse.
        A kind whose insert drops labels gets them through setLabels, also when found without them
        (an `up` interrupted between the insert and the setLabels)."""
        k = KINDS[kind]
        name = body["name"]
        labels = body.get("labels") if kind in LABELS_BY_SET_LABELS else None
        if labels is not None:
            body = {key: v for key, v in body.items() if key != "labels"}
        found = self._get(kind, name, zone)
        if found is not None:
            self.ledger.found(kind, name)
            return self._labelled(kind, found, labels, zone)
        self.progress(f"{kind} {name}", "creating")
        c = self.compute
        resource = getattr(c.types, k.message)(body)
        try:
            op = c.call(f"create {kind} {name}", c.client(k.client).insert_unary, allow=("Conflict",),
                        **self._scope(k, zone), **{f"{k.field}_resource": resource})
        except c.exceptions.Conflict:
            found = self._get(kind, name, zone)
            if found is None:
                raise ProviderError(f"gcp: {kind} {name} exists but cannot be read; check permissions") from None
            self.ledger.found(kind, name)
            return self._labelled(kind, found, labels, zone)
        c.wait(op, f"create {kind} {name}")
        created = self._get(kind, name, zone)
        if created is None:
            raise ProviderError(f"gcp: {kind} {name} was created but is gone; rerun `bakery up`")
        self.ledger.made(kind, name)
        return self._labelled(kind, created, labels, zone)

    def _labelled(self, kind: str, resource: Any, labels: dict[str, str] | None, zone: str | None) -> Any:
        """`resource` carrying `labels` (setLabels with its current labelFingerprint); None: as it is."""
        if labels is None:
            return resource
        have = dict(resource.labels)
        if all(have.get(key) == v for key, v in labels.items()):
            return resource
        theirs = have.get(LABEL_CLUSTER)
        if theirs and theirs != self.spec.name:
            raise ProviderError(f"gcp: {kind} {resource.name} belongs to cluster {theirs} (label {LABEL_CLUSTER}); "
                                "rename this cluster or delete that resource")
        k, c = KINDS[kind], self.compute
        request = c.types.RegionSetLabelsRequest(labels={**have, **labels}, label_fingerprint=resource.label_fingerprint)
        op = c.call(f"label {kind} {resource.name}", c.client(k.client).set_labels_unary, allow=(),
                    **self._scope(k, zone), resource=resource.name, region_set_labels_request_resource=request)
        c.wait(op, f"label {kind} {resource.name}")
        return self._get(kind, resource.name, zone) or resource

    def _wave(self, label: str, tasks: dict[str, Callable[[], T]]) -> dict[str, T]:
        """Run independent tasks in parallel; wait for all; raise the first failure."""
        def run(fn: Callable[[], T]) -> tuple[T, int]:
            reset_thread_calls()
            return fn(), thread_calls()

        with ThreadPoolExecutor(max_workers=max(1, min(16, len(tasks))), thread_name_prefix="bakery-gcp") as pool:
            futures = {key: pool.submit(run, fn) for key, fn in tasks.items()}
            wait_all(futures.values())
        errors = [f.exception() for f in futures.values() if f.exception() is not None]
        if errors:
            raise next((e for e in errors if isinstance(e, BakeryError)), errors[0])  # type: ignore[misc]
        results = {key: f.result() for key, f in futures.items()}
        self.trace.append((label, max((calls for _, calls in results.values()), default=0)))
        return {key: value for key, (value, _) in results.items()}

    # -- helpers -----------------------------------------------------------------------

    def _zones(self) -> list[str]:
        """The spec's zones and any recorded by an earlier up (a spec edit must not strand masters)."""
        recorded = state.load(self.paths).get("gcp", {}).get("zones", [])
        return list(dict.fromkeys([z.name for z in self.spec.zones] + list(recorded)))

    def _endpoint(self, ip: str) -> str:
        return f"https://{ip}:{self.spec.load_balancer.port}"

    def _record(self, **facts: Any) -> None:
        data = state.load(self.paths)
        data["gcp"] = {**data.get("gcp", {}), **facts}
        state.save(self.paths, data)


def _serialized(progress: Progress) -> Progress:
    """Progress reported from the wave threads one event at a time (lines never interleave)."""
    lock = threading.Lock()

    def report(step: str, status: str, detail: str = "") -> None:
        with lock:
            progress(step, status, detail)

    return report


def _image_from(path: Any, cluster: str) -> str | None:
    """The GCE image `bakery bake` recorded as current in images.json (bakery.bake.images)."""
    rec = images.current(path, cluster, "gcp")
    if not rec or not rec.get("image"):
        return None
    name, project = rec["image"], rec.get("project")
    # `bakery bake` may build into another project than the cluster's
    return f"projects/{project}/global/images/{name}" if project and "/" not in name else name


def _last(link: str) -> str:
    return link.rstrip("/").rsplit("/", 1)[-1]
