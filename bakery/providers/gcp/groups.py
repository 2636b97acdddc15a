"""GCP masters as managed instance groups (`gcp.masters: mig`): one zonal MIG per zone.

Why zonal MIGs and not one regional MIG: the plan spreads masters over the spec's zones
(master i in zone i mod len(zones)); one MIG per zone with that zone's count as its target
size gives exactly that spread, fits the backend service's per-zone backends as the
unmanaged groups did, and lets a rollout surge one zone by one. A regional MIG only
approximates an even spread and may move instances between zones by itself (proactive
redistribution), which would replace etcd members nobody asked to replace.

`up` (after the LB address, the store and the render, as for plain instances):

    1. firewall rules, the region health check, the instance template (the one small user-data;
       a new name whenever its content changes: GCE templates are immutable)
    2. one MIG per zone from that template (an existing one is pointed at the new template
       with setInstanceTemplate; running masters are left alone: bakery's rollout replaces them)
    3. the backend service over the MIGs' instance groups; then the forwarding rule
    4. the cluster's older templates that no MIG uses any more are deleted
    5. a bounded wait until every MIG is stable and its instances RUNNING

`down` deletes the forwarding rule, the backend service, then the MIGs (which take their
instances), then the templates, then the rest.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from bakery.errors import ProviderError
from bakery.providers.base import LBAddress, NodeStatus, RenderCallback, UpResult
from bakery.providers.gcp.resources import marker_filter
from bakery.render.userdata import UserData
from bakery.topology import plan

if TYPE_CHECKING:
    from bakery.providers.gcp.provider import GcpProvider


def _last(link: str) -> str:
    return link.rstrip("/").rsplit("/", 1)[-1]


def zone_sizes(provider: GcpProvider) -> dict[str, int]:
    """Masters per zone as the plan spreads them, in the spec's zone order (zones with none left out)."""
    return dict(Counter(n.zone for n in plan(provider.spec).nodes))


def up(p: GcpProvider, render: RenderCallback, *, wait: bool = False) -> UpResult:
    L = p.layout
    image = p.image()  # before any call: no image means nothing to boot
    sizes = zone_sizes(p)
    zones = list(sizes)
    lb_ip = p._lb_and_store(masters=[])

    rendered = render(LBAddress(ips=(lb_ip,)))
    docs = {r.user_data.encoded for r in rendered.values()}
    if len(docs) != 1:
        raise ProviderError("gcp: gcp.masters: mig needs one user-data for every master (user_data: store), "
                            f"but the render gave {len(docs)} different ones")
    (first, *_) = rendered.values()
    template = L.instance_template(image, first.user_data)  # metadata limits checked before any call

    wave: dict[str, Any] = {f"firewall {fw['name']}": (lambda fw=fw: p._ensure_firewall(fw)) for fw in L.firewalls()}
    wave["health check"] = lambda: p._ensure("health check", L.health_check())
    wave["template"] = lambda: p._ensure("instance template", template)
    p._wave("firewalls, health check, instance template", wave)

    groups = p._wave("managed instance groups", {
        z: (lambda z=z: _ensure_group(p, z, template["name"], sizes[z])) for z in zones
    })
    svc = p._wave("backend service", {"svc": lambda: p._ensure("backend service", L.backend_service(zones, managed=True))})["svc"]
    serving = sorted(_last(b.group) for b in svc.backends)
    if svc.load_balancing_scheme != L.scheme or serving != sorted(_last(g.instance_group) for g in groups.values()):
        p.ledger.drifted(
            f"backend service {svc.name} is {svc.load_balancing_scheme} over {', '.join(serving) or 'no groups'}; "
            f"the spec asks for {L.scheme} over the managed groups of {', '.join(zones)}: "
            "`bakery down` then `bakery up` to rebuild the load balancer"
        )
    rule = p._wave("forwarding rule", {"rule": lambda: p._ensure("forwarding rule", L.forwarding_rule(lb_ip))})["rule"]
    if rule.I_p_address != lb_ip:
        p.ledger.drifted(f"forwarding rule {rule.name} serves {rule.I_p_address}, not the reserved {lb_ip}: delete it and rerun `bakery up`")

    _prune_templates(p, keep=template["name"], zones=p._zones())
    members = wait_stable(p, zones)
    _plain_masters_drift(p, zones)
    older = sorted(m["name"] for m in members if m["template"] != template["name"])
    if older:
        p.ledger.drifted(
            f"{', '.join(older)} still run(s) an older template than {template['name']} (the groups use it for new and "
            "repaired masters only): `bakery rollout` replaces the masters one at a time"
        )

    endpoint = p._endpoint(lb_ip)
    p._record(
        lb_address=lb_ip, endpoint=endpoint, project=L.project, region=L.region, scheme=L.scheme, zones=zones,
        masters="mig", instance_template=template["name"],
        groups={p.names.mig(z): {"zone": z, "target_size": sizes[z]} for z in zones},
        instances={m["name"]: {"id": m["id"], "zone": m["zone"], "address": m["address"], "group": m["group"],
                               "template": m["template"]} for m in members},
        resources=sorted(p.ledger.created + p.ledger.existing),
    )
    if wait:
        p._wait_healthy(zones, [m["name"] for m in members])
    return UpResult(created=p.ledger.created, existing=p.ledger.existing, drift=p.ledger.drift, endpoint=endpoint)


def _ensure_group(p: GcpProvider, zone: str, template: str, size: int) -> Any:
    """The zone's MIG: created from `template`, or pointed at it. A target size that differs
    from the plan's is reported, not changed: a rollout in progress surges a group by one, and
    shrinking a group would take etcd members away without removing them first."""
    c = p.compute
    name = p.names.mig(zone)
    mig = p._ensure("instance group manager", p.layout.mig(zone, template, size), zone=zone)
    if _last(mig.instance_template) != template:
        what = f"point managed instance group {name} at template {template}"
        p.progress(f"instance group manager {name}", "updating", f"template {template}")
        op = c.call(what, c.client("InstanceGroupManagers").set_instance_template_unary, allow=(), project=p.layout.project,
                    zone=zone, instance_group_manager=name,
                    instance_group_managers_set_instance_template_request_resource=c.types.InstanceGroupManagersSetInstanceTemplateRequest(
                        instance_template=p.layout.mig(zone, template, size)["instance_template"]))
        c.wait(op, what)
        p.ledger.made("template of", name)
    if mig.target_size != size:
        p.ledger.drifted(
            f"managed instance group {name} has target size {mig.target_size}, the plan gives zone {zone} {size} master(s): "
            "bakery does not resize a master group by itself (a rollout in progress surges it by one; see `bakery status`)"
        )
    return mig


def _prune_templates(p: GcpProvider, keep: str, zones: list[str]) -> None:
    """Delete the cluster's instance templates that none of its MIGs uses. GCE refuses to
    delete one that any MIG still uses (400 resourceInUseByAnotherResource, e.g. a group the
    user made from `bakery instance-template`): that one is kept and the next `up` tries again."""
    used = {keep}
    for z in zones:
        for mig in p._list("instance group manager", marker_filter(p.spec.name), zone=z):
            used.add(_last(mig.instance_template))
            used.update(_last(v.instance_template) for v in mig.versions)
    c = p.compute
    for tpl in p._list("instance template", marker_filter(p.spec.name)):
        if tpl.name in used or not p.names.is_template(tpl.name):
            continue
        what = f"delete instance template {tpl.name}"
        p.progress(f"instance template {tpl.name}", "deleting", "no managed group uses it")
        try:
            op = c.call(what, c.client("InstanceTemplates").delete_unary, allow=("NotFound", "BadRequest"),
                        project=p.layout.project, instance_template=tpl.name)
        except c.exceptions.NotFound:
            continue  # gone between the list and the delete
        except c.exceptions.BadRequest as e:
            if "resourceInUseByAnotherResource" not in str(e) and "already being used" not in str(e):
                raise ProviderError(f"gcp: {what}: {e.code} {e.message}") from None
            p.progress(f"instance template {tpl.name}", "kept", "another resource still uses it")
            continue
        c.wait(op, what)
        p.ledger.gone("instance template", tpl.name)


def managed_instances(p: GcpProvider, zone: str, name: str) -> list[Any]:
    """A MIG's managed instances (listManagedInstances, every page)."""
    c = p.compute
    client = c.client("InstanceGroupManagers")
    return c.call(f"list the instances of managed instance group {name}",
                  lambda: list(client.list_managed_instances(project=p.layout.project, zone=zone, instance_group_manager=name)),
                  allow=())


def wait_stable(p: GcpProvider, zones: list[str]) -> list[dict[str, Any]]:
    """Wait (bounded by the provider's group_timeout, polling every poll_seconds) until every
    zone's MIG is stable (no current action) with all its instances RUNNING; return them as
    {name, id, zone, address, group, status}."""
    deadline = time.monotonic() + p.group_timeout
    while True:
        pending, members = [], []
        for z in zones:
            name = p.names.mig(z)
            mig = p._get("instance group manager", name, z)
            if mig is None:
                raise ProviderError(f"gcp: managed instance group {name} is gone; rerun `bakery up`")
            managed = managed_instances(p, z, name)
            running = [m for m in managed if m.instance_status == "RUNNING" and m.current_action == "NONE"]
            p.progress(f"instance group manager {name}", "waiting" if len(running) < mig.target_size else "stable",
                       f"{len(running)}/{mig.target_size} running")
            if not mig.status.is_stable or len(running) < mig.target_size or len(running) < len(managed):
                pending.append(f"{name} ({len(running)}/{mig.target_size} running)")
            members += [{"name": m.name or _last(m.instance), "id": str(m.id), "zone": z, "group": name, "status": m.instance_status,
                         "template": _last(m.version.instance_template) if m.version else None} for m in managed]
        if not pending:
            addresses = _addresses(p, zones)
            for m in members:
                m["address"] = addresses.get(m["name"])
            return members
        if time.monotonic() > deadline:
            raise ProviderError(
                f"gcp: managed instance groups not stable after {p.group_timeout:.0f}s: {', '.join(pending)}; "
                "see `bakery status` and the instances' serial console, and rerun `bakery up` to keep waiting"
            )
        time.sleep(p.poll_seconds)


def _addresses(p: GcpProvider, zones: list[str]) -> dict[str, str | None]:
    from bakery.providers.gcp.resources import label_filter

    out: dict[str, str | None] = {}
    for z in zones:
        for inst in p._list("instance", label_filter(p.spec.name), zone=z):
            out[inst.name] = inst.network_interfaces[0].network_i_p if inst.network_interfaces else None
    return out


def is_managed(instance: Any) -> bool:
    """Created by a MIG: GCE puts `created-by` (the manager's path) in such an instance's metadata."""
    return any(i.key == "created-by" and "/instanceGroupManagers/" in i.value for i in instance.metadata.items)


def _plain_masters_drift(p: GcpProvider, zones: list[str]) -> None:
    from bakery.providers.gcp.resources import label_filter

    plain = [i.name for z in zones for i in p._list("instance", label_filter(p.spec.name), zone=z) if not is_managed(i)]
    if plain:
        p.ledger.drifted(
            f"plain masters from gcp.masters: instances still run ({', '.join(sorted(plain))}) beside the managed groups: "
            "`bakery down` then `bakery up` to switch (both sets would join one etcd cluster otherwise)"
        )


def leftover_groups_drift(p: GcpProvider, zones: list[str]) -> None:
    """With gcp.masters: instances, the cluster's MIGs from an earlier `mig` spec still run masters."""
    left = [m.name for z in zones for m in p._list("instance group manager", marker_filter(p.spec.name), zone=z)]
    if left:
        p.ledger.drifted(
            f"managed instance groups from gcp.masters: mig still run masters ({', '.join(sorted(left))}) beside the plain "
            "instances: `bakery down` then `bakery up` to switch (both sets would join one etcd cluster otherwise)"
        )


def status_extra(p: GcpProvider, zones: list[str], nodes: list[NodeStatus]) -> dict[str, Any]:
    """Each MIG of the cluster (zone, target size, template, stable) and, on each node of one, its group
    and current action."""
    groups: dict[str, Any] = {}
    by_name = {n.name: n for n in nodes}
    for z in zones:
        for mig in p._list("instance group manager", marker_filter(p.spec.name), zone=z):
            managed = managed_instances(p, z, mig.name)
            groups[mig.name] = {"zone": z, "target_size": mig.target_size, "template": _last(mig.instance_template),
                                "stable": bool(mig.status.is_stable), "instances": sorted(m.name or _last(m.instance) for m in managed)}
            for m in managed:
                node = by_name.get(m.name or _last(m.instance))
                if node is not None:
                    node.extra.update(group=mig.name, action=m.current_action)
    return groups


# -- the group for surge rollouts (bakery/surge.py) ------------------------------------------

LIVE = ("PROVISIONING", "STAGING", "RUNNING")  # a machine that runs or is about to


class MigGroup:
    """The cluster's zonal MIGs as one master group for bakery/surge.py: surge resizes one
    zone's MIG by one and waits for the new instance; retire deletes one instance through
    its MIG (deleteInstances, which lowers the target size by one, so the group does not
    recreate it). The etcd endpoints are the instances' internal addresses: a rollout runs
    inside the VPC (or `endpoints` maps names to what reaches them)."""

    def __init__(self, p: GcpProvider) -> None:
        self.p = p
        self.zones = list(zone_sizes(p))

    def _managed(self) -> list[tuple[str, str, Any]]:
        """(zone, MIG name, managed instance) of every master the groups hold now."""
        out = []
        for z in self.zones:
            name = self.p.names.mig(z)
            if self.p._get("instance group manager", name, z) is None:
                raise ProviderError(f"gcp: managed instance group {name} does not exist: run `bakery up` first")
            out += [(z, name, m) for m in managed_instances(self.p, z, name)]
        return out

    def members(self) -> list[str]:
        return [m.name or _last(m.instance) for _, _, m in self._managed() if m.current_action not in ("DELETING", "ABANDONING")]

    def _where(self, name: str) -> tuple[str, str, Any]:
        for z, mig, m in self._managed():
            if (m.name or _last(m.instance)) == name:
                return z, mig, m
        raise ProviderError(f"gcp: {name} is not a master of {self.p.spec.name}'s managed instance groups")

    def _address(self, name: str) -> str:
        address = _addresses(self.p, self.zones).get(name)
        if not address:
            raise ProviderError(f"gcp: instance {name} has no internal address yet")
        return address

    def etcd_endpoints(self) -> dict[str, str]:
        addresses = _addresses(self.p, self.zones)
        port = self.p.spec.etcd.client_port
        return {n: f"https://{addresses[n]}:{port}" for n in self.members() if addresses.get(n)}

    def peer_url(self, name: str) -> str:
        return f"https://{self._address(name)}:{self.p.spec.etcd.peer_port}"

    def running(self, name: str) -> bool:
        try:
            z, _, _ = self._where(name)
        except ProviderError:
            return False
        inst = self.p._get("instance", name, z)
        return inst is not None and inst.status in LIVE

    def surge(self, user_data: UserData, like: str | None = None) -> str:
        """One new master in `like`'s zone (default: the zone with the fewest), from the
        instance template of the current image and `user_data`; its name once RUNNING."""
        p, c = self.p, self.p.compute
        counts = Counter(z for z, _, m in self._managed())
        zone = self._where(like)[0] if like else min(self.zones, key=lambda z: (counts.get(z, 0), self.zones.index(z)))
        name = p.names.mig(zone)
        tpl = p._ensure("instance template", p.layout.instance_template(p.image(), user_data))
        mig = p._get("instance group manager", name, zone)
        if _last(mig.instance_template) != tpl.name:
            what = f"point managed instance group {name} at template {tpl.name}"
            op = c.call(what, c.client("InstanceGroupManagers").set_instance_template_unary, allow=(), project=p.layout.project,
                        zone=zone, instance_group_manager=name,
                        instance_group_managers_set_instance_template_request_resource=c.types.InstanceGroupManagersSetInstanceTemplateRequest(
                            instance_template=p.layout.mig(zone, tpl.name, 1)["instance_template"]))
            c.wait(op, what)
        before = {m.name or _last(m.instance) for _, _, m in self._managed()}
        what = f"resize managed instance group {name} to {mig.target_size + 1}"
        p.progress(f"instance group manager {name}", "surging", f"{mig.target_size} -> {mig.target_size + 1}")
        op = c.call(what, c.client("InstanceGroupManagers").resize_unary, allow=(), project=p.layout.project, zone=zone,
                    instance_group_manager=name, size=mig.target_size + 1)
        c.wait(op, what)
        deadline = time.monotonic() + p.group_timeout
        while True:
            new = [m for _, g, m in self._managed() if g == name and (m.name or _last(m.instance)) not in before]
            if new and new[0].instance_status == "RUNNING":
                return new[0].name or _last(new[0].instance)
            if time.monotonic() > deadline:
                raise ProviderError(f"gcp: {name} made no RUNNING instance within {p.group_timeout:.0f}s of its resize; "
                                    "see `bakery status`; a rerun of the rollout adopts it once it runs")
            time.sleep(p.poll_seconds)

    def retire(self, name: str) -> None:
        """Delete master `name` through its MIG (its etcd member must be gone already) and
        wait (bounded) until the instance is gone."""
        p, c = self.p, self.p.compute
        zone, mig, m = self._where(name)
        what = f"delete instance {name} from managed instance group {mig}"
        p.progress(f"instance {name}", "retiring", f"through {mig}")
        req = c.types.InstanceGroupManagersDeleteInstancesRequest(instances=[m.instance[m.instance.index("projects/"):]])
        op = c.call(what, c.client("InstanceGroupManagers").delete_instances_unary, allow=(), project=p.layout.project,
                    zone=zone, instance_group_manager=mig, instance_group_managers_delete_instances_request_resource=req)
        c.wait(op, what)
        deadline = time.monotonic() + p.group_timeout
        while p._get("instance", name, zone) is not None:
            if time.monotonic() > deadline:
                raise ProviderError(f"gcp: instance {name} still exists {p.group_timeout:.0f}s after its deletion from {mig}")
            time.sleep(p.poll_seconds)
