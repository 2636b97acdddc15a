r"""AwsProvider: `up`, `status`, `down` and the launch template, as step graphs.

`up`, in dependency order, independent steps in parallel (dag.py):

    image ------------------------------------------------------------.
    vpc -> subnet:<zone>... -> lb -> render -> master:<node>... -> targets -> healthy (--wait)
        -> gateway ---------'      \-> listener ----------------------------'
              \-> route
        -> sg:masters, sg:api ----------------------'
        -> target-group -> registered -------------------------'
    existing (the masters already running) ------'
    store:bucket -> store:tags, store:<each setting> -> store (bucket.py) -> render
    iam:role -> iam:policy; iam:profile -> iam (the role in its profile: iam.py) -> master:<node>

Every step finds its resource by tag before it creates it, so a rerun, or one after an
interruption at any point, converges without duplicates. state.json records every id
as soon as its step finishes. `down` keeps the store's bucket unless `purge`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from bakery import state as state_mod
from bakery import topology
from bakery.errors import ProviderError
from bakery.providers.aws import (
    bucket,
    dag,
    group,
    iam,
    instances,
    launch_template,
    loadbalancer,
    network,
)
from bakery.providers.aws.clients import (
    ClientFactory,
    Clients,
    default_factory,
    endpoint_url,
    translated,
)
from bakery.providers.aws.common import LIVE_STATES, cluster_filter, elb_name
from bakery.providers.base import (
    ClusterStatus,
    LBAddress,
    Ledger,
    NodeStatus,
    Progress,
    RenderCallback,
    RenderedNode,
    UpResult,
    forget_etcd,
)
from bakery.render.userdata import UserData
from bakery.spec import ClusterSpec
from bakery.state import ClusterPaths
from bakery.store import Store, location


class AwsProvider:
    name = "aws"

    def __init__(
        self,
        spec: ClusterSpec,
        paths: ClusterPaths,
        progress: Progress,
        *,
        client_factory: ClientFactory | None = None,
        poll_interval: float = 5.0,
        wait_timeout: float = 900.0,
        workers: int = 16,
    ) -> None:
        self.spec = spec
        self.paths = paths
        self.progress = progress
        self.region = spec.provider_spec.region
        self.clients = Clients(client_factory or default_factory(self.region, endpoint_url(spec.provider_spec.endpoint_url)))
        self.poll = poll_interval
        self.timeout = wait_timeout
        self.workers = workers
        self.trace: dict[str, dag.Span] = {}  # the last run's steps, for bench/up.py

    # -- up -----------------------------------------------------------------------------

    def up(self, render: RenderCallback, *, wait: bool = False) -> UpResult:
        spec, ledger = self.spec, Ledger(self.progress)
        plan = topology.plan(spec)
        network.check_layout(spec)
        network.check_discovery(spec)
        ami = instances.image_id(spec, self.paths.images)
        known = state_mod.load(self.paths).get("lb", {})
        early: dict[str, Any] = {}
        if known.get("dns_names"):
            # The LB's names are known from a previous run: render and check sizes before any call.
            early["lb"] = LBAddress(tuple(known["dns_names"]), tuple(known.get("ips", ())))
            early["nodes"] = self._rendered(render, early["lb"], plan)
        ec2, elbv2 = self.clients.ec2, self.clients.elbv2
        zones = list(network.zone_subnets(spec))

        def rendered(r: Mapping[str, Any]) -> dict[str, RenderedNode]:
            address = LBAddress(dns_names=(r["lb"].dns_name,))
            if early.get("lb") == address:
                return early["nodes"]
            return self._rendered(render, address, plan)

        def master(node_name: str):
            def step(r: Mapping[str, Any]) -> str:
                node = r["render"][node_name]
                existing = r["existing"].get(node_name)
                if existing:
                    ledger.found(f"master {node_name}", existing["InstanceId"])
                    instances.check_drift(ec2, node, existing, ami, ledger)
                    if existing["State"]["Name"] != "pending":
                        return existing["InstanceId"]
                    iid = existing["InstanceId"]
                else:
                    groups = [r["sg:masters"], r["sg:api"]]
                    iid = instances.run_master(ec2, spec, node, r[f"subnet:{node.zone}"], groups, r["image"], ledger,
                                               profile=r["iam"].instance_profile)
                self.progress(f"master {node_name}", "waiting", "until running")
                instances.wait_running(ec2, [iid], timeout=self.timeout, interval=self.poll)
                return iid
            return step

        def targets(r: Mapping[str, Any]) -> list[str]:
            """The masters to register: all but stopped ones (ELBv2 refuses those; drift names them)."""
            stopped = {i["InstanceId"] for i in r["existing"].values() if i["State"]["Name"] in ("stopping", "stopped")}
            return [r[f"master:{n.name}"] for n in plan.nodes if r[f"master:{n.name}"] not in stopped]

        vpc = lambda r: r["vpc"]  # noqa: E731
        s3, iam_client = self.clients("s3"), self.clients("iam")
        steps = [
            # The store exists before anything renders (nodes read it at boot) and the
            # masters start with the role that may read it.
            dag.Step("store:bucket", (), lambda r: bucket.find_or_create(s3, spec, ledger)),
            dag.Step("store:tags", ("store:bucket",), lambda r: bucket.ensure_tag(s3, spec, *r["store:bucket"], ledger)),
            *[dag.Step(f"store:{f.__name__}", ("store:bucket",), lambda r, f=f: f(s3, spec, r["store:bucket"][0].name, ledger))
              for f in bucket.SETTINGS],
            dag.Step("store", ("store:tags", *[f"store:{f.__name__}" for f in bucket.SETTINGS]),
                     lambda r: replace(r["store:bucket"][0], owned=r["store:tags"])),
            dag.Step("iam:role", (), lambda r: iam.ensure_role(iam_client, spec, ledger)),
            dag.Step("iam:policy", ("iam:role",), lambda r: iam.ensure_policy(iam_client, spec, ledger)),
            dag.Step("iam:profile", (), lambda r: iam.ensure_profile(iam_client, spec, ledger)),
            dag.Step("iam", ("iam:role", "iam:policy", "iam:profile"),
                     lambda r: iam.attach(iam_client, spec, r["iam:profile"], ledger)),
            dag.Step("image", (), lambda r: instances.describe_image(ec2, ami)),
            dag.Step("existing", (), lambda r: instances.find_masters(ec2, spec.name)),
            dag.Step("vpc", (), lambda r: network.ensure_vpc(ec2, spec, ledger)),
            *[dag.Step(f"subnet:{z}", ("vpc",), lambda r, z=z: network.ensure_subnet(ec2, spec, vpc(r), z, ledger))
              for z in zones],
            dag.Step("gateway", ("vpc",), lambda r: network.ensure_gateway(ec2, spec, vpc(r), ledger)),
            dag.Step("route", ("gateway",), lambda r: network.ensure_default_route(ec2, vpc(r), r["gateway"], ledger)),
            *[dag.Step(f"sg:{role}", ("vpc",), lambda r, role=role: network.ensure_security_group(ec2, spec, vpc(r), role, ledger))
              for role in network.SG_ROLES],
            dag.Step("sg:endpoints", ("vpc",), lambda r: network.ensure_endpoint_group(ec2, spec, vpc(r), ledger)),
            # the masters' path to S3, EC2 and Auto Scaling: made in bakery's VPC, checked in the user's
            dag.Step("path", ("sg:endpoints", *[f"subnet:{z}" for z in zones]), lambda r: (
                network.ensure_endpoints(ec2, spec, vpc(r), [r[f"subnet:{z}"] for z in zones], r["sg:endpoints"], ledger),
                network.check_path(ec2, spec, vpc(r), {z: r[f"subnet:{z}"] for z in zones}))),
            dag.Step("target-group", ("vpc",), lambda r: loadbalancer.ensure_target_group(elbv2, spec, vpc(r).id, ledger)),
            dag.Step("lb", (*[f"subnet:{z}" for z in zones], "gateway"),
                     lambda r: loadbalancer.ensure_load_balancer(elbv2, spec, [r[f"subnet:{z}"] for z in zones], ledger)),
            dag.Step("listener", ("lb", "target-group"),
                     lambda r: loadbalancer.ensure_listener(elbv2, spec, r["lb"], r["target-group"], ledger)),
            dag.Step("render", ("lb", "store", "path"), rendered, inline=True),
            *[dag.Step(f"master:{n.name}", ("render", "existing", "image", f"subnet:{n.zone}", "sg:masters", "sg:api", "iam"),
                       master(n.name)) for n in plan.nodes],
            dag.Step("registered", ("target-group",), lambda r: loadbalancer.registered(elbv2, r["target-group"])),
            dag.Step("targets", ("registered", *[f"master:{n.name}" for n in plan.nodes]),
                     lambda r: loadbalancer.ensure_targets(elbv2, r["target-group"], r["registered"], targets(r), ledger)),
        ]
        if spec.provider_spec.masters == "asg":  # type: ignore[union-attr]
            masters = {f"master:{n.name}" for n in plan.nodes} | {"targets", "registered"}
            steps = [st for st in steps if st.name not in masters] + self._group_steps(ledger, zones, wait)
        elif wait:
            steps.append(dag.Step("healthy", ("targets", "listener"), lambda r: loadbalancer.wait_healthy(
                elbv2, r["target-group"], [r[f"master:{n.name}"] for n in plan.nodes], self.progress,
                timeout=self.timeout, interval=self.poll)))
        with translated(self.region):
            run = dag.run(steps, workers=self.workers, on_done=self._record)
        self.trace = run.trace
        for line in run.results.get("group:drift", []):
            ledger.drifted(line)
        for name, inst in sorted(run.results["existing"].items()):
            if name not in {n.name for n in plan.nodes}:
                ledger.drifted(f"{name} ({inst['InstanceId']}) is running but not in the plan ({spec.masters} masters): "
                               "remove it with a rollout (etcd member remove first), or `bakery down` the whole cluster")
        lb_plan = topology.plan(spec, lb_dns_names=(run.results["lb"].dns_name,))
        return UpResult(created=ledger.created, existing=ledger.existing, drift=ledger.drift, endpoint=lb_plan.lb.endpoint)

    def _group_steps(self, ledger: Ledger, zones: list[str], wait: bool) -> list[dag.Step]:
        """aws.masters: asg: the launch template (the one small user-data, the current image),
        the group from it, its suspended processes and termination hook; then the waits."""
        spec, ec2, elbv2, asg = self.spec, self.clients.ec2, self.clients.elbv2, self.clients("autoscaling")

        def template(r: Mapping[str, Any]) -> tuple[str, int]:
            user_data = {n.user_data.encoded: n.user_data for n in r["render"].values()}
            if len(user_data) != 1:
                raise ProviderError(f"aws.masters: asg boots every master from one launch template, but the render gave "
                                    f"{len(user_data)} different user-data documents: use user_data: store")
            data = launch_template.template_data(spec, next(iter(user_data.values())), r["image"],
                                                 [r["sg:masters"], r["sg:api"]], r["iam"].instance_profile)
            return launch_template.ensure(ec2, spec, data, ledger)

        def settings(r: Mapping[str, Any]) -> group.Settings:
            return group.Settings.of(spec, r["lt"], [r[f"subnet:{z}"] for z in zones], r["target-group"])

        def drift(r: Mapping[str, Any]) -> list[str]:
            found = group.find(asg, spec.name)
            plain = next(iter(r["render"].values())).user_data.plain
            return group.drift(ec2, found, settings(r), r["image"].id, plain) if found else []

        steps = [
            dag.Step("lt", ("render", "image", "sg:masters", "sg:api", "iam"), template),
            dag.Step("group", ("lt", "target-group", *[f"subnet:{z}" for z in zones]),
                     lambda r: group.ensure(asg, spec, settings(r), ledger)),
            dag.Step("group:processes", ("group",), lambda r: group.ensure_suspended(asg, r["group"], ledger)),
            dag.Step("group:hook", ("group",), lambda r: group.ensure_hook(asg, r["group"], ledger)),
            dag.Step("group:in-service", ("group:processes", "group:hook"), lambda r: group.wait_in_service(
                asg, r["group"], spec.masters, self.progress, timeout=self.timeout, interval=self.poll)),
            dag.Step("group:drift", ("group:in-service", "render", "image"), drift),
        ]
        if wait:
            steps.append(dag.Step("healthy", ("group:in-service", "listener"), lambda r: loadbalancer.wait_healthy(
                elbv2, r["target-group"], r["group:in-service"], self.progress, timeout=self.timeout, interval=self.poll)))
        return steps

    def _rendered(self, render: RenderCallback, lb: LBAddress, plan: topology.ClusterPlan) -> dict[str, RenderedNode]:
        self.progress("render", "rendering", ", ".join(lb.dns_names))
        nodes = dict(render(lb))
        want = {n.name: (n.address, n.zone) for n in plan.nodes}
        got = {n.name: (n.address, n.zone) for n in nodes.values()}
        if got != want:
            raise ProviderError(f"the rendered nodes {sorted(got.items())} do not match the plan {sorted(want.items())}")
        instances.check_size(nodes)
        return nodes

    def _record(self, step: str, result: Any) -> None:
        """Write each resource id to state.json as soon as its step is done."""
        data = state_mod.load(self.paths)
        aws = data.setdefault("aws", {})
        kind, _, key = step.partition(":")
        if kind == "vpc":
            aws["vpc"] = {"id": result.id, "cidr": result.cidr, "owned": result.owned}
        elif kind == "subnet":
            aws.setdefault("subnets", {})[key] = result
        elif kind == "sg":
            aws.setdefault("security_groups", {})[key] = result
        elif kind == "master":
            aws.setdefault("instances", {})[key] = result
        elif kind == "gateway" and result:
            aws["internet_gateway"] = result
        elif kind in ("target-group", "listener"):
            aws[kind.replace("-", "_")] = result
        elif kind == "image":
            aws["image"] = result.id
        elif step == "lt":
            aws["launch_template"] = {"id": result[0], "version": result[1]}
        elif step == "group":
            aws["autoscaling_group"] = result
        elif step == "store":
            data["store"] = {"url": result.url, "owned": result.owned}
        elif step == "iam":
            aws["iam"] = {"instance_profile": result.instance_profile, "role": result.role}
        elif kind == "lb":
            aws["load_balancer"] = {"arn": result.arn, "dns_name": result.dns_name}
            data["lb"] = {"dns_names": [result.dns_name], "ips": []}  # as pipeline.Cluster reads it
        else:
            return
        state_mod.save(self.paths, data)

    # -- status ---------------------------------------------------------------------------

    def store(self) -> Store:
        """The cluster's S3 store through this provider's clients (endpoint, credentials)."""
        from bakery.store.s3 import S3Store

        _, bucket_name, prefix = location.split(location.store_url(self.spec))
        return S3Store(bucket_name, prefix, client=self.clients("s3"))

    def status(self) -> ClusterStatus:
        spec = self.spec
        plan = topology.plan(spec)
        ec2, elbv2 = self.clients.ec2, self.clients.elbv2
        with translated(self.region):
            found = instances.find_masters(ec2, spec.name, (*LIVE_STATES, "shutting-down"))
            lb = loadbalancer.by_name(elbv2, "lb", elb_name(spec.name, "api"))
            tg = loadbalancer.by_name(elbv2, "tg", elb_name(spec.name, "api"))
            health = loadbalancer.target_health(elbv2, tg["TargetGroupArn"]) if tg else {}
        if spec.provider_spec.masters == "asg":  # type: ignore[union-attr]
            with translated(self.region):
                nodes = self._group_status(health)
        else:
            nodes = self._instance_status(plan, found, health)
        dns = lb["DNSName"] if lb else None
        endpoint = topology.plan(spec, lb_dns_names=(dns,) if dns else ()).lb.endpoint
        return ClusterStatus(spec.name, "aws", endpoint, nodes, extra={"load_balancer": dns, "region": self.region})

    def _instance_status(self, plan: topology.ClusterPlan, found: dict[str, dict[str, Any]],
                         health: dict[str, str]) -> list[NodeStatus]:
        nodes = []
        for n in plan.nodes:
            inst = found.get(n.name)
            if inst is None:
                nodes.append(NodeStatus(n.name, None, n.address, n.zone, "absent", "-"))
                continue
            nodes.append(NodeStatus(
                n.name, inst["InstanceId"], inst.get("PrivateIpAddress"), inst["Placement"]["AvailabilityZone"],
                inst["State"]["Name"], health.get(inst["InstanceId"], "unregistered"), inst.get("ImageId")))
        return nodes

    def _group_status(self, health: dict[str, str]) -> list[NodeStatus]:
        """The group's instances: named by their hostname (as bakery-node names a group member),
        state = Auto Scaling's lifecycle state, health = the target's, then the group's own word."""
        group_name = group.name(self.spec.name)
        listed = group.members(self.clients("autoscaling"), group_name)
        ids = [i["InstanceId"] for i in listed]
        ec2 = {}
        if ids:
            described = self.clients.ec2.describe_instances(InstanceIds=ids)["Reservations"]
            ec2 = {i["InstanceId"]: i for r in described for i in r["Instances"]}
        nodes = []
        for i in sorted(listed, key=lambda i: (i["AvailabilityZone"], i["InstanceId"])):
            inst = ec2.get(i["InstanceId"], {})
            host = (inst.get("PrivateDnsName") or "").split(".")[0] or i["InstanceId"]
            nodes.append(NodeStatus(
                host, i["InstanceId"], inst.get("PrivateIpAddress"), i["AvailabilityZone"], i["LifecycleState"],
                f"{health.get(i['InstanceId'], 'unregistered')} ({i.get('HealthStatus', '?').lower()})", inst.get("ImageId"),
                extra={"group": group_name, "launch_template_version": (i.get("LaunchTemplate") or {}).get("Version")}))
        return nodes

    # -- down -----------------------------------------------------------------------------

    def down(self, purge: bool = False) -> list[str]:
        """Delete what carries the cluster's tag. The store's bucket stays unless `purge`."""
        cluster, ledger = self.spec.name, Ledger(self.progress)
        ec2, elbv2 = self.clients.ec2, self.clients.elbv2
        f = cluster_filter(cluster)

        def delete_lbs(r: Mapping[str, Any]) -> None:
            arns = [lb["LoadBalancerArn"] for lb in r["find:elb"][0]]
            for lb in r["find:elb"][0]:
                elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
                ledger.gone("load-balancer", lb["LoadBalancerName"])
            if arns:
                loadbalancer.wait_deleted(elbv2, arns, timeout=self.timeout, interval=self.poll)

        def delete_tgs(r: Mapping[str, Any]) -> None:
            for tg in r["find:elb"][1]:
                elbv2.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])
                ledger.gone("target-group", tg["TargetGroupName"])

        def terminate(r: Mapping[str, Any]) -> None:
            ids = [i["InstanceId"] for i in r["find:masters"].values()]
            if not ids:
                return
            ec2.terminate_instances(InstanceIds=ids)
            for name, inst in sorted(r["find:masters"].items()):
                ledger.gone(f"master {name}", inst["InstanceId"])
            instances.wait_terminated(ec2, ids, timeout=self.timeout, interval=self.poll)

        def delete_each(kind: str, items: list[dict[str, Any]], key: str, call: Any):
            for item in items:
                network.retry_dependency(lambda item=item: call(item), f"{kind} {item[key]}",
                                         timeout=self.timeout, interval=self.poll)
                ledger.gone(kind, item[key])

        def delete_igws(r: Mapping[str, Any]) -> None:
            def call(igw: dict[str, Any]) -> None:
                for a in igw.get("Attachments", []):
                    ec2.detach_internet_gateway(InternetGatewayId=igw["InternetGatewayId"], VpcId=a["VpcId"])
                ec2.delete_internet_gateway(InternetGatewayId=igw["InternetGatewayId"])
            delete_each("internet-gateway", r["find:igw"], "InternetGatewayId", call)

        asg = self.clients("autoscaling")
        cleared = ("delete:lb", "delete:masters", "delete:group")
        steps = [
            # The group first (with ForceDelete, its instances go with it), waited for: it
            # uses the launch template, the target group, the subnets and the security groups.
            dag.Step("delete:group", (), lambda r: group.delete(asg, ec2, cluster, ledger, timeout=self.timeout,
                                                             interval=self.poll)),
            dag.Step("find:masters", ("delete:group",),
                     lambda r: instances.find_masters(ec2, cluster, (*LIVE_STATES, "shutting-down"))),
            dag.Step("find:elb", (), lambda r: loadbalancer.find_tagged(elbv2, cluster)),
            dag.Step("find:sg", (), lambda r: ec2.describe_security_groups(Filters=f)["SecurityGroups"]),
            dag.Step("find:subnet", (), lambda r: ec2.describe_subnets(Filters=f)["Subnets"]),
            dag.Step("find:igw", (), lambda r: ec2.describe_internet_gateways(Filters=f)["InternetGateways"]),
            dag.Step("find:vpc", (), lambda r: ec2.describe_vpcs(Filters=f)["Vpcs"]),
            dag.Step("find:lt", (), lambda r: ec2.describe_launch_templates(Filters=f)["LaunchTemplates"]),
            dag.Step("find:vpce", (), lambda r: [e for e in ec2.describe_vpc_endpoints(Filters=f)["VpcEndpoints"]
                                                 if e.get("State", "").lower() not in ("deleted", "deleting")]),
            # the endpoints' network interfaces sit in the subnets and use the endpoints' group
            dag.Step("delete:vpce", ("find:vpce", *cleared), lambda r: delete_each(
                "vpc-endpoint", r["find:vpce"], "VpcEndpointId",
                lambda e: ec2.delete_vpc_endpoints(VpcEndpointIds=[e["VpcEndpointId"]]))),
            dag.Step("delete:lb", ("find:elb",), delete_lbs),
            dag.Step("delete:tg", ("find:elb", "delete:lb", "delete:group"), delete_tgs),
            dag.Step("delete:masters", ("find:masters",), terminate),
            dag.Step("delete:lt", ("find:lt", "delete:group"), lambda r: delete_each(
                "launch-template", r["find:lt"], "LaunchTemplateId",
                lambda t: ec2.delete_launch_template(LaunchTemplateId=t["LaunchTemplateId"]))),
            dag.Step("delete:sg", ("find:sg", "delete:vpce", *cleared), lambda r: delete_each(
                "security-group", r["find:sg"], "GroupId", lambda g: ec2.delete_security_group(GroupId=g["GroupId"]))),
            dag.Step("delete:igw", ("find:igw", *cleared), delete_igws),
            dag.Step("delete:subnet", ("find:subnet", "delete:vpce", *cleared), lambda r: delete_each(
                "subnet", r["find:subnet"], "SubnetId", lambda s: ec2.delete_subnet(SubnetId=s["SubnetId"]))),
            dag.Step("delete:vpc", ("find:vpc", "delete:vpce", "delete:sg", "delete:igw", "delete:subnet"), lambda r: delete_each(
                "vpc", r["find:vpc"], "VpcId", lambda v: ec2.delete_vpc(VpcId=v["VpcId"]))),
            dag.Step("delete:iam", ("delete:masters", "delete:group"), lambda r: iam.delete(self.clients("iam"), cluster, ledger)),
        ]
        if purge:
            steps.append(dag.Step("delete:store", ("delete:masters", "delete:group"), lambda r: bucket.purge(self.clients("s3"), self.spec, ledger)))
        else:  # the masters' disks went with them (DeleteOnTermination): their etcd is gone
            steps.append(dag.Step("forget:etcd", ("delete:masters", "delete:group"), lambda r: self._forget_etcd(ledger)))
        with translated(self.region):
            run = dag.run(steps, workers=self.workers)
        self.trace = run.trace
        data = state_mod.load(self.paths)
        if "aws" in data or "lb" in data or (purge and "store" in data):
            data.pop("aws", None)
            data.pop("lb", None)
            if purge:
                data.pop("store", None)
            state_mod.save(self.paths, data)
        return ledger.deleted

    def _forget_etcd(self, ledger: Ledger) -> None:
        if bucket.exists(self.clients("s3"), self.spec):
            forget_etcd(self.store(), self.spec.name, ledger)

    # -- the group for rollouts -----------------------------------------------------------

    @property
    def cattle(self) -> bool:
        """Masters in an autoscaling group boot one user-data: a rollout surges (bakery/surge.py)."""
        return self.spec.provider_spec.masters == "asg"  # type: ignore[union-attr]

    def group(self) -> group.AsgGroup:
        return group.AsgGroup(self)

    # -- launch template ----------------------------------------------------------------

    def launch_template(self, user_data: UserData) -> tuple[str, int]:
        """Create or update `<cluster>-master` with the cluster's small user-data; (id, version)."""
        spec, ledger = self.spec, Ledger(self.progress)
        ami = instances.image_id(spec, self.paths.images)
        ec2 = self.clients.ec2
        with translated(self.region):
            groups = ec2.describe_security_groups(Filters=cluster_filter(spec.name))["SecurityGroups"]
            roles = {g["GroupId"] for g in groups if any(t["Key"] == "bakery:role" and t["Value"].startswith("sg-")
                                                          for t in g.get("Tags", []))}
            if len(roles) < len(network.SG_ROLES):
                raise ProviderError(f"{spec.name}'s security groups do not exist yet: run `bakery up` first")
            profile = spec.provider_spec.instance_profile or iam.role_name(spec.name)  # type: ignore[union-attr]
            data = launch_template.template_data(spec, user_data, instances.describe_image(ec2, ami), sorted(roles), profile)
            tid, version = launch_template.ensure(ec2, spec, data, ledger)
        state_mod.update(self.paths, launch_template={"id": tid, "version": version})
        return tid, version


def create(spec: ClusterSpec, paths: ClusterPaths, progress: Progress, **options: Any) -> AwsProvider:
    return AwsProvider(spec, paths, progress, **options)
