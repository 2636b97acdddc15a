"""The masters' autoscaling group (`aws.masters: asg`): found by name, its tag checked,
created once, then only what differs is updated.

    <cluster>-masters   min = max = desired = masters
                        the cluster's launch template, pinned to its current version
                        VPCZoneIdentifier: the zones' subnets; TargetGroupARNs: the NLB's
                        HealthCheckType EC2 after aws.health_check_grace_seconds
                        AZRebalance suspended (it would terminate masters to even out zones)
                        lifecycle hook `bakery-leave` on EC2_INSTANCE_TERMINATING: a master
                        leaving on purpose removes its etcd member first (`bakery-node leave`)

Every instance it starts boots the cluster's one small user-data and becomes a master
through bakery-node: a terminated master is replaced by the group, and the replacement
joins etcd by itself. `delete` uses ForceDelete (AWS refuses to delete a group that
still has instances otherwise: ResourceInUse) and waits until the group is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bakery.errors import ProviderError
from bakery.providers.aws.common import (
    LIVE_STATES,
    TAG_CLUSTER,
    cluster_filter,
    poll,
    settled,
    tags,
)
from bakery.providers.aws.instances import wait_terminated
from bakery.providers.base import Ledger, Progress
from bakery.spec import ClusterSpec

LEAVE_HOOK = "bakery-leave"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
# Long enough for `bakery-node leave` (etcd member remove under the join lock, a store
# delete); bounded, and CONTINUE when it runs out: a leave that hangs never keeps an
# instance from terminating. (AWS allows 30-7200 s.)
LEAVE_HEARTBEAT = 300
SUSPENDED = ("AZRebalance",)
INSTANCE_ROLE = "master-asg"  # the bakery:role the launch template gives the instances it starts
DELETING = "Delete in progress"


def name(cluster: str) -> str:
    """The group's name; bakery-node derives the same one to complete its lifecycle action."""
    return f"{cluster}-masters"


@dataclass(frozen=True)
class Settings:
    """What the group must look like, in the terms DescribeAutoScalingGroups reports."""

    size: int
    template_id: str
    template_version: int
    subnet_ids: tuple[str, ...]
    target_group_arn: str
    grace: int

    @classmethod
    def of(cls, spec: ClusterSpec, template: tuple[str, int], subnet_ids: list[str], target_group_arn: str) -> Settings:
        return cls(spec.masters, template[0], template[1], tuple(sorted(subnet_ids)), target_group_arn,
                   spec.provider_spec.health_check_grace_seconds)  # type: ignore[union-attr]


def find(asg: Any, cluster: str) -> dict[str, Any] | None:
    """The cluster's group by name; a group of that name that is not the cluster's is an error."""
    found = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name(cluster)])["AutoScalingGroups"]
    if not found:
        return None
    group = found[0]
    owner = {t["Key"]: t["Value"] for t in group.get("Tags", [])}.get(TAG_CLUSTER)
    if owner != cluster:
        raise ProviderError(f"autoscaling group {name(cluster)} exists but is not tagged {TAG_CLUSTER}={cluster} "
                            f"(it is {owner or 'untagged'}): rename the cluster or delete that group")
    return dict(group)


def find_tagged(asg: Any, cluster: str) -> list[dict[str, Any]]:
    """Every group carrying the cluster's tag, whatever its name (for `down`)."""
    groups = []
    for page in asg.get_paginator("describe_auto_scaling_groups").paginate(
            Filters=[{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster]}]):
        groups += page["AutoScalingGroups"]
    return groups


def _template(s: Settings) -> dict[str, str]:
    return {"LaunchTemplateId": s.template_id, "Version": str(s.template_version)}


def differences(group: dict[str, Any], s: Settings) -> dict[str, Any]:
    """UpdateAutoScalingGroup's arguments for what differs from `s` (empty: nothing to do)."""
    out: dict[str, Any] = {}
    for key, want in (("MinSize", s.size), ("MaxSize", s.size), ("DesiredCapacity", s.size),
                      ("HealthCheckType", "EC2"), ("HealthCheckGracePeriod", s.grace)):
        if group.get(key) != want:
            out[key] = want
    have = group.get("LaunchTemplate") or {}
    if (have.get("LaunchTemplateId"), str(have.get("Version"))) != (s.template_id, str(s.template_version)):
        out["LaunchTemplate"] = _template(s)
    subnets = tuple(sorted(x for x in (group.get("VPCZoneIdentifier") or "").split(",") if x))
    if subnets != s.subnet_ids:
        out["VPCZoneIdentifier"] = ",".join(s.subnet_ids)
    return out


def ensure(asg: Any, spec: ClusterSpec, s: Settings, ledger: Ledger) -> str:
    """The group with settings `s`: created, or updated where it differs; its name."""
    from botocore.exceptions import ClientError

    from bakery.providers.aws.clients import error_code

    group_name = name(spec.name)
    group = find(asg, spec.name)
    if group is None:
        try:
            settled(lambda: asg.create_auto_scaling_group(
                AutoScalingGroupName=group_name, LaunchTemplate=_template(s),
                MinSize=s.size, MaxSize=s.size, DesiredCapacity=s.size,
                VPCZoneIdentifier=",".join(s.subnet_ids), TargetGroupARNs=[s.target_group_arn],
                HealthCheckType="EC2", HealthCheckGracePeriod=s.grace,
                Tags=[{**t, "PropagateAtLaunch": t["Key"] == TAG_CLUSTER, "ResourceId": group_name,
                       "ResourceType": "auto-scaling-group"}
                      for t in tags(spec.name, "master-group", group_name)],
            ))
            ledger.made("autoscaling-group", f"{group_name} ({s.size} x {s.template_id} v{s.template_version})")
            return group_name
        except ClientError as e:
            if error_code(e) != "AlreadyExists":  # another `up` made it a moment ago: compare with that one
                raise
        group = find(asg, spec.name)
        if group is None:
            raise ProviderError(f"autoscaling group {group_name}: AWS said it exists, then that it does not; rerun `bakery up`")
    if group.get("Status") == DELETING:
        raise ProviderError(f"autoscaling group {group_name} is being deleted (a `bakery down` in progress): "
                            "wait until it is gone, then rerun `bakery up`")
    change = differences(group, s)
    if group.get("DesiredCapacity", 0) > s.size:
        # a surge rollout in progress (or a hand-made resize): shrinking would let Auto Scaling
        # terminate a master whose etcd member nobody removed; `bakery rollout` finishes the surge
        for key in ("MinSize", "MaxSize", "DesiredCapacity"):
            change.pop(key, None)
        ledger.drifted(f"autoscaling group {group_name} wants {group['DesiredCapacity']} instances, the spec {s.size}: "
                       "a rollout in progress surged it (`bakery rollout` finishes it and shrinks it back); "
                       "bakery never shrinks a master group by itself")
    if change:
        asg.update_auto_scaling_group(AutoScalingGroupName=group_name, **change)
        ledger.made("autoscaling-group update", f"{group_name}: {', '.join(sorted(change))}")
    else:
        ledger.found("autoscaling-group", group_name)
    if s.target_group_arn not in group.get("TargetGroupARNs", []):
        asg.attach_load_balancer_target_groups(AutoScalingGroupName=group_name, TargetGroupARNs=[s.target_group_arn])
        ledger.made("autoscaling-group target group", group_name)
    return group_name


def ensure_suspended(asg: Any, group_name: str, ledger: Ledger) -> None:
    """AZRebalance suspended: it terminates instances to even out zones, and a master
    terminated for that leaves etcd one voter short until its replacement joins."""
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])["AutoScalingGroups"][0]
    have = {p["ProcessName"] for p in group.get("SuspendedProcesses", [])}
    missing = [p for p in SUSPENDED if p not in have]
    if missing:
        asg.suspend_processes(AutoScalingGroupName=group_name, ScalingProcesses=missing)
        ledger.made("suspended processes", f"{group_name}: {', '.join(missing)}")
    else:
        ledger.found("suspended processes", f"{group_name}: {', '.join(SUSPENDED)}")


def ensure_hook(asg: Any, group_name: str, ledger: Ledger) -> None:
    """The termination lifecycle hook, written only when it differs."""
    hooks = asg.describe_lifecycle_hooks(AutoScalingGroupName=group_name, LifecycleHookNames=[LEAVE_HOOK])["LifecycleHooks"]
    want = {"LifecycleTransition": TERMINATING, "HeartbeatTimeout": LEAVE_HEARTBEAT, "DefaultResult": "CONTINUE"}
    if hooks and all(hooks[0].get(k) == v for k, v in want.items()):
        ledger.found("lifecycle-hook", f"{group_name}/{LEAVE_HOOK}")
        return
    asg.put_lifecycle_hook(AutoScalingGroupName=group_name, LifecycleHookName=LEAVE_HOOK, **want)
    ledger.made("lifecycle-hook", f"{group_name}/{LEAVE_HOOK}")


def members(asg: Any, group_name: str) -> list[dict[str, Any]]:
    """The group's instances as Auto Scaling reports them (id, zone, lifecycle state, health)."""
    found = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])["AutoScalingGroups"]
    return list(found[0].get("Instances", [])) if found else []


def wait_in_service(asg: Any, group_name: str, size: int, progress: Progress, *, timeout: float, interval: float) -> list[str]:
    """Until `size` instances are InService and Healthy; their ids."""
    ready: list[str] = []

    def done() -> bool:
        nonlocal ready
        now = members(asg, group_name)
        ready = sorted(i["InstanceId"] for i in now if i.get("LifecycleState") == "InService" and i.get("HealthStatus") == "Healthy")
        progress(f"autoscaling-group {group_name}", "waiting" if len(ready) < size else "in service", f"{len(ready)}/{size} in service")
        return len(ready) >= size

    poll(done, f"autoscaling group {group_name}: {size} instances in service", timeout=timeout, interval=interval)
    return ready


def drift(ec2: Any, group: dict[str, Any], s: Settings, image_id: str, user_data: bytes) -> list[str]:
    """Members that are not what the group would start now (another template version,
    image or user-data): a rollout replaces them, `up` does not."""
    from bakery.providers.aws.instances import user_data_of

    listed = {i["InstanceId"]: i for i in group.get("Instances", [])}
    if not listed:
        return []
    described = ec2.describe_instances(InstanceIds=sorted(listed))["Reservations"]
    out = []
    for inst in (i for r in described for i in r["Instances"]):
        iid, reasons = inst["InstanceId"], []
        version = (listed[iid].get("LaunchTemplate") or {}).get("Version")
        if version is not None and str(version) != str(s.template_version):
            reasons.append(f"launch template version {version}, the group's is {s.template_version}")
        if inst.get("ImageId") != image_id:
            reasons.append(f"image {inst.get('ImageId')}, wanted {image_id}")
        if user_data_of(ec2, iid) != user_data:
            reasons.append("user-data differs from the launch template's")
        if reasons:
            out.append(f"{iid} (autoscaling group {group['AutoScalingGroupName']}): {'; '.join(reasons)}: replace it "
                       "with a rollout (`bakery rollout`), which keeps etcd quorum; `up` does not replace masters")
    return out


def delete(asg: Any, ec2: Any, cluster: str, ledger: Ledger, *, timeout: float, interval: float) -> None:
    """Delete the cluster's groups with their instances (ForceDelete) and wait until they
    are gone, then until every instance a group started is terminated (ForceDelete does not
    wait for them; they hold the subnets, security groups and instance profile). A group
    already being deleted (an interrupted `down`) is only waited for."""
    from botocore.exceptions import ClientError

    from bakery.providers.aws.clients import error_code

    groups = find_tagged(asg, cluster)
    for g in groups:
        group_name = g["AutoScalingGroupName"]
        if g.get("Status") != DELETING:
            try:
                asg.delete_auto_scaling_group(AutoScalingGroupName=group_name, ForceDelete=True)
            except ClientError as e:
                if error_code(e) != "ValidationError":  # gone meanwhile ("not found")
                    raise
        ledger.gone("autoscaling-group", f"{group_name} ({len(g.get('Instances', []))} instances)")
    if groups:
        names = [g["AutoScalingGroupName"] for g in groups]

        def gone() -> bool:
            return not asg.describe_auto_scaling_groups(AutoScalingGroupNames=names)["AutoScalingGroups"]

        poll(gone, f"autoscaling groups {', '.join(names)} to be deleted", timeout=timeout, interval=interval)
    # No group is left to replace them: end what a group started and did not end yet.
    filters = [*cluster_filter(cluster, INSTANCE_ROLE),
               {"Name": "instance-state-name", "Values": [*LIVE_STATES, "shutting-down"]}]
    left = [i for r in ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]
    if not left:
        return
    running = [i["InstanceId"] for i in left if i["State"]["Name"] != "shutting-down"]
    if running:
        ec2.terminate_instances(InstanceIds=running)
        for iid in running:
            ledger.gone("group master", iid)
    wait_terminated(ec2, [i["InstanceId"] for i in left], timeout=timeout, interval=interval)


# -- the group for surge rollouts (bakery/surge.py) ------------------------------------------

GONE_STATES = ("Terminating", "Terminating:Wait", "Terminating:Proceed", "Terminated", "Detaching", "Detached")


class AsgGroup:
    """The cluster's autoscaling group as a master group for bakery/surge.py. A master is
    named by its hostname, as bakery-node names its etcd member (the private DNS name's
    first label). surge points the group at the launch template of the current image and
    raises max and desired by one; retire terminates one instance through the group
    (desired back down), completes its termination hook (its member is gone already),
    waits until it is terminated and puts max back. The etcd endpoints are the private
    addresses: a rollout runs inside the VPC."""

    def __init__(self, p: Any) -> None:
        self.p = p
        self.asg = p.clients("autoscaling")
        self.ec2 = p.clients.ec2
        self.group_name = name(p.spec.name)

    def _group(self) -> dict[str, Any]:
        g = find(self.asg, self.p.spec.name)
        if g is None:
            raise ProviderError(f"autoscaling group {self.group_name} does not exist: run `bakery up` first")
        return g

    def _instances(self) -> dict[str, dict[str, Any]]:
        """hostname -> {id, address, state, lifecycle} of the group's instances that are not leaving."""
        listed = {i["InstanceId"]: i for i in self._group().get("Instances", []) if i.get("LifecycleState") not in GONE_STATES}
        if not listed:
            return {}
        out = {}
        for r in self.ec2.describe_instances(InstanceIds=sorted(listed))["Reservations"]:
            for inst in r["Instances"]:
                host = (inst.get("PrivateDnsName") or "").split(".")[0]
                if host:
                    out[host] = {"id": inst["InstanceId"], "address": inst.get("PrivateIpAddress"),
                                 "state": inst["State"]["Name"], "lifecycle": listed[inst["InstanceId"]].get("LifecycleState")}
        return out

    def members(self) -> list[str]:
        return sorted(self._instances())

    def etcd_endpoints(self) -> dict[str, str]:
        port = self.p.spec.etcd.client_port
        return {n: f"https://{i['address']}:{port}" for n, i in sorted(self._instances().items()) if i["address"]}

    def peer_url(self, host: str) -> str:
        i = self._instances().get(host)
        if i is None or not i["address"]:
            raise ProviderError(f"{host} is not a running master of autoscaling group {self.group_name}")
        return f"https://{i['address']}:{self.p.spec.etcd.peer_port}"

    def running(self, host: str) -> bool:
        i = self._instances().get(host)
        return i is not None and i["state"] in ("pending", "running")

    def surge(self, user_data: Any, like: str | None = None) -> str:
        """One new master from the launch template of the current image and `user_data`;
        its hostname once Auto Scaling has it InService. The group picks the zone (it
        balances them; AZRebalance stays suspended)."""
        tid, version = self.p.launch_template(user_data)
        g = self._group()
        before = set(self._instances())
        want = g["DesiredCapacity"] + 1
        self.p.progress(f"autoscaling-group {self.group_name}", "surging", f"{g['DesiredCapacity']} -> {want}")
        self.asg.update_auto_scaling_group(AutoScalingGroupName=self.group_name, MaxSize=max(g["MaxSize"], want),
                                           DesiredCapacity=want,
                                           LaunchTemplate={"LaunchTemplateId": tid, "Version": str(version)})
        found: list[str] = []

        def new_in_service() -> bool:
            now = self._instances()
            found[:] = [h for h, i in now.items() if h not in before and i["lifecycle"] == "InService"]
            return bool(found)

        poll(new_in_service, f"autoscaling group {self.group_name}: the surged instance in service",
             timeout=self.p.timeout, interval=self.p.poll)
        return found[0]

    def retire(self, host: str) -> None:
        """Terminate master `host` through the group (desired - 1), complete its termination
        hook (its etcd member is gone already), wait until it is terminated, and put max
        back to the spec's size once desired is there."""
        from botocore.exceptions import ClientError

        from bakery.providers.aws.clients import error_code

        i = self._instances().get(host)
        if i is None:
            return  # already leaving or gone
        iid = i["id"]
        self.p.progress(f"master {host}", "retiring", f"{iid} through {self.group_name}")
        self.asg.terminate_instance_in_auto_scaling_group(InstanceId=iid, ShouldDecrementDesiredCapacity=True)
        try:
            self.asg.complete_lifecycle_action(LifecycleHookName=LEAVE_HOOK, AutoScalingGroupName=self.group_name,
                                               LifecycleActionResult="CONTINUE", InstanceId=iid)
        except ClientError as e:
            # "No active Lifecycle Action found": the instance's bakery-node completed it, or the hook was not hit yet
            if error_code(e) != "ValidationError":
                raise
        wait_terminated(self.ec2, [iid], timeout=self.p.timeout, interval=self.p.poll)
        g = self._group()
        size = self.p.spec.masters
        if g["DesiredCapacity"] <= size and g["MaxSize"] > size:
            self.asg.update_auto_scaling_group(AutoScalingGroupName=self.group_name, MaxSize=size,
                                               MinSize=min(g["MinSize"], size), DesiredCapacity=g["DesiredCapacity"])
