"""`bakery-node leave` (bakery/node/leave.py) on real etcd 3.5 members on loopback, with the
autoscaling group's side in moto (tests/moto_server.py Lifecycle, since moto has no
lifecycle actions of its own) and the instance's metadata from tests/fake_imds.py.

Three agents bootstrap etcd in `store` mode as the group's three instances (their
instance ids are moto's). The group then terminates one: it waits on the termination
hook, its IMDS says Terminated; `leave` removes its member (the others keep quorum),
forgets its record and completes the hook, and the group replaces the instance.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from bakery.etcd import TLS, Client, Member
from bakery.node import identity
from bakery.node import leave as leave_mod
from bakery.node import members as records
from bakery.node.agent import Agent, NodeConfig
from bakery.node.join import Refused, Timing
from bakery.providers.aws import group
from bakery.providers.base import Ledger, no_progress
from bakery.store.folder import FolderStore
from bakery.topology import Node
from tests.etcd_fixtures import RenderedCluster, wait_healthy
from tests.fake_imds import imds
from tests.moto_server import Moto, moto, moto_session  # noqa: F401
from tests.test_node_agent import EtcdStarter, _publish, _render

pytestmark = pytest.mark.etcd

ME = Node(0, "m-1", "10.0.0.11", "z", "10.0.0.0/24", 2379, 2380)


def member(i: int, *, learner: bool = False) -> Member:
    return Member(i, f"m-{i}", (f"https://10.0.0.{10 + i}:2380",), (f"https://10.0.0.{10 + i}:2379",), learner)


# -- the decision (pure) ----------------------------------------------------------------------


def test_plan_leave_keeps_quorum() -> None:
    three = [member(0), member(1), member(2)]
    assert leave_mod.plan_leave(ME, three, {0, 1, 2}).id == 1
    with pytest.raises(Refused, match=r"unsafe for quorum: without me 1 of 2 voting members would be healthy, 2 needed \(down: m-2\)"):
        leave_mod.plan_leave(ME, three, {0, 1})
    with pytest.raises(Refused, match="no quorum: 1 of 3"):
        leave_mod.plan_leave(ME, three, {1})
    with pytest.raises(Refused, match="last voting member"):
        leave_mod.plan_leave(ME, [member(1)], {1})
    # two voters, the other healthy: one is a quorum of one
    assert leave_mod.plan_leave(ME, [member(0), member(1)], {0, 1}).id == 1
    # a learner may always go; no member of mine: nothing to do
    assert leave_mod.plan_leave(ME, [member(0), member(2), member(1, learner=True)], {0}).id == 1
    with pytest.raises(Refused, match="no member at my peer URL"):
        leave_mod.plan_leave(ME, [member(0), member(2)], {0, 2})


def test_a_reboot_is_told_apart_from_a_poweroff() -> None:
    assert leave_mod.shutdown_kind(lambda argv: "12 reboot.target start waiting\n") == "reboot"
    assert leave_mod.shutdown_kind(lambda argv: "7 poweroff.target start waiting\n") == "poweroff"
    assert leave_mod.shutdown_kind(lambda argv: (_ for _ in ()).throw(FileNotFoundError())) == "unknown"


def test_imds_target_lifecycle_state_needs_a_token_and_is_absent_outside_a_group() -> None:
    import urllib.error
    import urllib.request

    states = {"i-1": "InService"}
    with imds("i-1", states.get) as url:
        with pytest.raises(urllib.error.HTTPError) as e:  # IMDSv1 is refused (HttpTokens required)
            urllib.request.urlopen(f"{url}/latest/meta-data/autoscaling/target-lifecycle-state", timeout=5)
        assert e.value.code == 401
        assert leave_mod.target_lifecycle_state(url) == "InService"
        states["i-1"] = "Terminated"
        assert leave_mod.target_lifecycle_state(url) == "Terminated"
        del states["i-1"]
        assert leave_mod.target_lifecycle_state(url) is None  # 404: in no group
    assert leave_mod.target_lifecycle_state("http://127.0.0.1:9") is None  # no metadata service


# -- on real etcd, with the group in moto -------------------------------------------------------


def ec2_instance_data(path: Path, instance_id: str, hostname: str, address: str) -> Path:
    doc = {"v1": {"instance_id": instance_id, "local_hostname": hostname, "availability_zone": "local", "cloud_name": "aws"},
           "ds": {"meta-data": {"instance-id": instance_id, "local-ipv4": address}}}
    path.write_text(json.dumps(doc))
    return path


def moto_group(moto: Moto, cluster: str, size: int) -> list[str]:  # noqa: F811
    """The cluster's group in moto as `up` leaves it (name, tag, termination hook); its instance ids."""
    ec2 = moto.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.240.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.240.0.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    tid = ec2.create_launch_template(LaunchTemplateName=f"{cluster}-master",
                                     LaunchTemplateData={"ImageId": moto.register_ami()})["LaunchTemplate"]["LaunchTemplateId"]
    asg = moto.client("autoscaling")
    asg.create_auto_scaling_group(
        AutoScalingGroupName=group.name(cluster), LaunchTemplate={"LaunchTemplateId": tid, "Version": "1"},
        MinSize=size, MaxSize=size, DesiredCapacity=size, VPCZoneIdentifier=subnet,
        Tags=[{"Key": "bakery:cluster", "Value": cluster, "PropagateAtLaunch": True}])
    group.ensure_hook(asg, group.name(cluster), Ledger(no_progress))
    return sorted(i["InstanceId"] for i in group.members(asg, group.name(cluster)))


def test_a_master_the_group_terminates_leaves_etcd_and_completes_the_hook(
        moto: Moto, tmp_path: Path, etcd_bin: Path) -> None:  # noqa: F811
    rc = RenderedCluster(tmp_path / "c", 3, bootstrap="store")
    _render(rc.spec_file, rc.build)
    store = FolderStore(tmp_path / "store")
    digest, _ = _publish(rc, store)
    ids = moto_group(moto, "lo", 3)
    prefix = rc.addresses[0].rsplit(".", 1)[0]
    names = ["m-a", "m-b", "m-c"]
    hosts = {n: f"{prefix}.{21 + i}" for i, n in enumerate(names)}
    iids = dict(zip(names, ids, strict=True))
    timing = dataclasses.replace(Timing(), poll=0.2, backoff=1.0, quorum=120, promote=60, reach=60, healthy=60)

    def agent(name: str) -> tuple[Agent, EtcdStarter]:
        ident = identity.load(ec2_instance_data(tmp_path / f"id-{name}.json", iids[name], name, hosts[name]))
        starter = EtcdStarter(tmp_path / f"root-{name}", etcd_bin, tmp_path / f"data-{name}", tmp_path / f"etcd-{name}.log")
        return Agent(NodeConfig("lo", store.url, digest), ident, store, root=tmp_path / f"root-{name}",
                     state_dir=tmp_path / f"state-{name}", run=starter, etcd_data_dir=tmp_path / f"data-{name}",
                     timing=timing), starter

    agents = {n: agent(n) for n in names}
    results: dict[str, Any] = {}

    def apply(name: str) -> None:
        try:
            results[name] = agents[name][0].apply()
        except BaseException as e:  # reported below, with the etcd logs
            results[name] = e

    state = tmp_path / "state-m-a" / "pki" / "etcd"
    tls = TLS(state / "ca.crt", state / "healthcheck-client.crt", state / "healthcheck-client.key")
    urls = {n: f"https://{hosts[n]}:{rc.client_port}" for n in names}
    autoscaling = moto.client("autoscaling")
    try:
        threads = [threading.Thread(target=apply, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        logs = "\n".join(s.proc.tail() for _, s in agents.values() if s.proc)
        assert all(not isinstance(r, BaseException) for r in results.values()), f"{results}\n{logs}"

        # the group terminates m-b: it waits on the hook, and its metadata says so
        victim = iids["m-b"]
        assert moto.lifecycle.terminate(victim) == "Terminating:Wait"
        (waiting,) = [i for i in group.members(autoscaling, "lo-masters") if i["InstanceId"] == victim]
        assert waiting["LifecycleState"] == "Terminating:Wait"
        with imds(victim, moto.lifecycle.state) as url:
            left = leave_mod.run(agents["m-b"][0], imds=url, shutdown="poweroff",
                                 autoscaling=lambda region: autoscaling, timeout=90)
        assert left.removed and left.forgot and left.completed and left.kept == ""
        with Client([urls["m-a"], urls["m-c"]], tls) as c:
            wait_healthy(c, [urls["m-a"], urls["m-c"]], 30)
            assert sorted((m.name, m.is_learner) for m in c.member_list()) == [("m-a", False), ("m-c", False)]
        assert sorted(r.name for r in records.records(store, "lo")) == ["m-a", "m-c"]
        assert moto.lifecycle.completed == [("lo-masters", "bakery-leave", victim, "CONTINUE")]
        after = [i["InstanceId"] for i in group.members(autoscaling, "lo-masters")]
        assert len(after) == 3 and victim not in after  # the group replaced it from the template
        state_of = moto.client("ec2").describe_instances(InstanceIds=[victim])["Reservations"][0]["Instances"][0]["State"]
        assert state_of["Name"] in ("shutting-down", "terminated")

        # a reboot keeps the member, and touches neither etcd nor the hook
        with imds(iids["m-a"], moto.lifecycle.state) as url:
            kept = leave_mod.run(agents["m-a"][0], imds=url, shutdown="reboot", autoscaling=lambda region: autoscaling)
        assert kept.removed == 0 and not kept.completed and "reboot" in kept.kept

        # m-c's etcd is down: m-a leaving would cost the quorum, so its member stays
        agents["m-c"][1].proc.stop()  # type: ignore[union-attr]
        with imds(iids["m-a"], moto.lifecycle.state) as url:
            refused = leave_mod.run(agents["m-a"][0], imds=url, shutdown="poweroff",
                                    autoscaling=lambda region: autoscaling, timeout=30)
        assert refused.removed == 0 and not refused.forgot and not refused.completed
        assert "no quorum" in refused.kept and "of 2 voting members healthy" in refused.kept
        with Client([urls["m-a"]], tls) as c:
            assert sorted(m.name for m in c.member_list()) == ["m-a", "m-c"]
        assert sorted(r.name for r in records.records(store, "lo")) == ["m-a", "m-c"]
    finally:
        for _, s in agents.values():
            if s.proc:
                s.proc.stop()


def test_complete_without_a_waiting_action_is_a_logged_line_not_a_failure(moto: Moto, tmp_path: Path) -> None:  # noqa: F811
    ids = moto_group(moto, "lo", 1)
    complete = leave_mod.lifecycle_completer(moto.client("autoscaling"), "lo-masters", group.LEAVE_HOOK, ids[0])
    from bakery.errors import NodeError

    with pytest.raises(NodeError, match="ValidationError: No active Lifecycle Action found with instance ID"):
        complete()
    left = leave_mod.leave(ME, "lo", FolderStore(tmp_path / "store"), lambda urls: None,  # type: ignore[arg-type,return-value]
                           lifecycle_state="Terminated", complete=complete, shutdown="reboot")
    assert not left.completed and left.removed == 0


def test_instance_alive_asks_ec2_for_the_members_recorded_address(moto: Moto, tmp_path: Path) -> None:  # noqa: F811
    """What a group's replacement asks before it removes a dead member (bakery/node/ec2.py)."""
    from bakery.node import ec2 as node_ec2

    ec2 = moto.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.240.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.240.0.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    tagged = [{"ResourceType": "instance", "Tags": [{"Key": "bakery:cluster", "Value": "lo"}]}]
    iid = ec2.run_instances(ImageId=moto.register_ami(), MinCount=1, MaxCount=1, SubnetId=subnet,
                            PrivateIpAddress="10.240.0.57", TagSpecifications=tagged)["Instances"][0]["InstanceId"]
    ec2.run_instances(ImageId=moto.register_ami(), MinCount=1, MaxCount=1, SubnetId=subnet,
                      PrivateIpAddress="10.240.0.58")  # not the cluster's
    store = FolderStore(tmp_path / "store")
    for name, address in (("ip-10-240-0-57", "10.240.0.57"), ("ip-10-240-0-58", "10.240.0.58")):
        records.write(store, "lo", records.Record(name, f"https://{address}:2380", f"https://{address}:2379", 7))
    alive = node_ec2.instance_alive(ec2, store, "lo")
    assert alive("ip-10-240-0-57") is True
    assert alive("ip-10-240-0-58") is False  # an instance at that address, but not the cluster's
    assert alive("nobody") is None
    ec2.terminate_instances(InstanceIds=[iid])
    assert alive("ip-10-240-0-57") is False
    assert node_ec2.region_of("us-east-1a") == "us-east-1"
