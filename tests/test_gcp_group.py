"""GCP masters as managed instance groups (`gcp.masters: mig`, the default): the real
google-cloud-compute clients against the fake GCE, which keeps each MIG's target size,
repairs what is deleted behind its back and refuses what GCE refuses."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from bakery import spec as specmod
from bakery import state
from bakery.errors import ProviderError, SpecError
from bakery.providers.base import LBAddress, RenderedNode
from bakery.providers.gcp import GcpProvider
from bakery.render.userdata import decode, encode
from bakery.topology import plan
from tests.fake_gce import FakeGCE, Fault
from tests.fake_gcs import FakeGCS

PROJECT = "test-project"
IMAGE, IMAGE2 = "bakery-k8s-1-31-4-abc123", "bakery-k8s-1-31-4-def456"
ZONES = ("us-central1-a", "us-central1-b", "us-central1-c")
SMALL = b"#cloud-config\nwrite_files:\n- path: /etc/bakery/node.json\n  content: '{\"cluster\": \"demo\"}'\n"


def spec_text(masters: int = 3, image: str = IMAGE, extra: str = "", gcp: str = "") -> str:
    return (f"name: demo\nprovider: gcp\nmasters: {masters}\n{extra}"
            f"gcp:\n  project: {PROJECT}\n  image: {image}\n{gcp}")


@pytest.fixture
def gce() -> Iterator[FakeGCE]:
    with FakeGCE(project=PROJECT).running() as fake:
        fake.add_image(IMAGE)
        fake.add_image(IMAGE2)
        yield fake


@pytest.fixture(autouse=True)
def gcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGCS]:
    with FakeGCS(project=PROJECT).running() as fake:
        monkeypatch.setenv("BAKERY_GCS_ENDPOINT_URL", fake.url)
        monkeypatch.setenv("BAKERY_GCP_IAM_ENDPOINT_URL", fake.url)
        yield fake


class Renderer:
    """The cluster's one small user-data for every node (user_data: store), as the pipeline renders it."""

    def __init__(self, spec: specmod.ClusterSpec, plain: bytes = SMALL) -> None:
        self.spec, self.plain, self.calls = spec, plain, []  # type: ignore[var-annotated]

    def __call__(self, lb: LBAddress) -> dict[str, RenderedNode]:
        self.calls.append(lb)
        ud = encode(self.plain, "gcp")
        return {n.name: RenderedNode(n.name, n.address, n.zone, ud) for n in plan(self.spec, lb_ips=lb.ips).nodes}


def make(gce: FakeGCE, tmp_path: Path, text: str | None = None, **kw: Any) -> tuple[GcpProvider, specmod.ClusterSpec]:
    spec = specmod.parse((text or spec_text()) + f"  endpoint_url: {gce.url}\n")
    kw.setdefault("poll_seconds", 0.02)
    return GcpProvider(spec, state.paths(spec.name, tmp_path), **kw), spec


def client(gce: FakeGCE, name: str) -> Any:
    return getattr(compute_v1, f"{name}Client")(transport="rest", client_options={"api_endpoint": gce.url}, credentials=AnonymousCredentials())


def user_data(inst: dict[str, Any]) -> bytes:
    meta = {i["key"]: i["value"] for i in inst["metadata"]["items"]}
    return decode(meta["user-data"].encode(), meta.get("user-data-encoding", "plain"))  # type: ignore[arg-type]


def migs(gce: FakeGCE) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in gce.resources("instanceGroupManagers")}


def mutations(gce: FakeGCE, since: int = 0) -> list[str]:
    reads = ("get", "list", "wait", "action:listInstances", "action:getHealth", "action:listManagedInstances")
    return [f"{c.kind} {c.collection} {c.name}" for c in gce.calls[since:] if c.kind not in reads]


def templates(gce: FakeGCE) -> list[str]:
    return sorted(t["name"] for t in gce.resources("instanceTemplates"))


EXPECTED = {
    "addresses": ["demo-apiserver"],  # no master address: GCE picks them
    "backendServices": ["demo-apiserver"],
    "firewalls": ["demo-apiserver", "demo-health-checks", "demo-masters-internal"],
    "forwardingRules": ["demo-apiserver"],
    "healthChecks": ["demo-apiserver"],
    "instanceGroupManagers": [f"demo-mig-{z}" for z in ZONES],
    "instanceGroups": [f"demo-mig-{z}" for z in ZONES],  # the ones GCE makes for the MIGs
}


@pytest.mark.parametrize(("masters", "sizes"), [(3, (1, 1, 1)), (5, (2, 2, 1))])
def test_up_creates_one_mig_per_zone_with_these_settings(gce: FakeGCE, tmp_path: Path, masters: int, sizes: tuple[int, ...]) -> None:
    provider, spec = make(gce, tmp_path, spec_text(masters))
    assert spec.etcd.bootstrap == "store"  # mig, no etcd.bootstrap given
    result = provider.up(Renderer(spec))
    assert not result.drift

    inv = gce.inventory()
    assert {k: v for k, v in inv.items() if k not in ("instances", "instanceTemplates")} == EXPECTED
    (tpl,) = gce.resources("instanceTemplates")
    assert user_data(tpl["properties"]) == SMALL
    assert tpl["properties"]["disks"][0]["initializeParams"]["sourceImage"] == f"projects/{PROJECT}/global/images/{IMAGE}"
    assert "networkIP" not in tpl["properties"]["networkInterfaces"][0]

    by_zone = {z: migs(gce)[f"demo-mig-{z}"] for z in ZONES}
    for zone, size in zip(ZONES, sizes, strict=True):
        m = by_zone[zone]
        assert m["zone"].endswith(f"/zones/{zone}")
        assert m["instanceTemplate"].endswith(f"/global/instanceTemplates/{tpl['name']}")
        assert m["targetSize"] == size  # the plan's spread: master i in zone i mod 3
        assert m["baseInstanceName"] == f"demo-master-{zone[-1]}"
        assert (m["updatePolicy"]["type"], m["updatePolicy"]["minimalAction"]) == ("OPPORTUNISTIC", "REPLACE")
        assert m["instanceLifecyclePolicy"] == {"forceUpdateOnRepair": "YES", "defaultActionOnFailure": "REPAIR"}
        assert "autoHealingPolicies" not in m  # no API-server health check may recreate a master (resources.Layout.mig)
        assert "namedPorts" not in m  # a passthrough NLB's backend service takes no port name
        assert m["status"]["isStable"]
    assert sum(m["targetSize"] for m in by_zone.values()) == masters

    (svc,) = gce.resources("backendServices")
    assert sorted(b["group"] for b in svc["backends"]) == sorted(f"projects/{PROJECT}/zones/{z}/instanceGroups/demo-mig-{z}" for z in ZONES)
    assert "portName" not in svc and svc["protocol"] == "TCP"

    instances = gce.resources("instances")
    assert len(instances) == masters
    recorded = state.load(provider.paths)["gcp"]
    for inst in instances:
        zone = inst["zone"].rsplit("/", 1)[1]
        assert re.fullmatch(rf"demo-master-{zone[-1]}-[a-z0-9]{{4}}", inst["name"])
        assert user_data(inst) == SMALL  # the one small user-data, from the template
        assert inst["labels"] == {"bakery-cluster": "demo", "bakery-role": "master"}
        assert inst["status"] == "RUNNING"
        assert inst["name"] in gce.members(f"demo-mig-{zone}")
        assert recorded["instances"][inst["name"]] == {"id": inst["id"], "zone": zone, "group": f"demo-mig-{zone}",
                                                       "address": inst["networkInterfaces"][0]["networkIP"], "template": tpl["name"]}
    assert recorded["masters"] == "mig" and recorded["instance_template"] == tpl["name"]


def test_second_up_creates_nothing_and_changes_nothing(gce: FakeGCE, tmp_path: Path) -> None:
    provider, spec = make(gce, tmp_path)
    provider.up(Renderer(spec))
    before, inventory = len(gce.calls), gce.inventory()
    ids = sorted(i["id"] for i in gce.resources("instances"))
    result = provider.up(Renderer(spec))
    assert mutations(gce, before) == []
    assert result.created == [] and result.drift == []
    assert gce.inventory() == inventory and sorted(i["id"] for i in gce.resources("instances")) == ids


def test_a_new_image_gives_a_new_template_the_migs_switch_and_the_old_one_goes(gce: FakeGCE, tmp_path: Path) -> None:
    provider, spec = make(gce, tmp_path)
    provider.up(Renderer(spec))
    (old,) = templates(gce)
    ids = {i["name"]: i["id"] for i in gce.resources("instances")}

    provider, spec = make(gce, tmp_path, spec_text(image=IMAGE2))
    before = len(gce.calls)
    result = provider.up(Renderer(spec))
    (new,) = templates(gce)
    assert new != old
    assert sorted(mutations(gce, before)) == sorted(
        [f"action:setInstanceTemplate instanceGroupManagers demo-mig-{z}" for z in ZONES]
        + ["insert instanceTemplates None", f"delete instanceTemplates {old}"])
    assert all(m["instanceTemplate"].endswith(f"/instanceTemplates/{new}") for m in migs(gce).values())
    assert {i["name"]: i["id"] for i in gce.resources("instances")} == ids  # running masters are the rollout's to replace
    assert f"instance template {old}" in provider.ledger.deleted
    (drift,) = result.drift  # the running masters are on the old template: a rollout's job, said once
    assert drift.startswith(", ".join(sorted(ids))) and f"older template than {new}" in drift and "bakery rollout" in drift

    # a repaired master boots the current template (forceUpdateOnRepair), so the new image
    victim = gce.resources("instances")[0]
    client(gce, "Instances").delete_unary(project=PROJECT, zone=victim["zone"].rsplit("/", 1)[1], instance=victim["name"])
    repaired = next(i for i in gce.resources("instances") if i["name"] == victim["name"])
    assert repaired["id"] != victim["id"]
    assert repaired["disks"][0]["initializeParams"]["sourceImage"].endswith(f"/images/{IMAGE2}")


def test_a_template_another_group_uses_is_kept_not_an_error(gce: FakeGCE, tmp_path: Path) -> None:
    provider, spec = make(gce, tmp_path)
    provider.up(Renderer(spec))
    (old,) = templates(gce)
    # the user's own MIG, made from the template `bakery instance-template` printed
    mine = compute_v1.InstanceGroupManager(name="users-own", base_instance_name="own", target_size=0,
                                           instance_template=f"projects/{PROJECT}/global/instanceTemplates/{old}")
    client(gce, "InstanceGroupManagers").insert_unary(project=PROJECT, zone=ZONES[0], instance_group_manager_resource=mine)

    provider, spec = make(gce, tmp_path, spec_text(image=IMAGE2))
    result = provider.up(Renderer(spec))
    assert old in templates(gce) and len(templates(gce)) == 2  # GCE's 400 resourceInUseByAnotherResource: kept
    assert f"instance template {old}" not in provider.ledger.deleted
    assert [d for d in result.drift if "older template" not in d] == []


@pytest.mark.parametrize(("extra", "key", "words"), [
    ("etcd:\n  bootstrap: static\n", "etcd.bootstrap", "static needs the masters' addresses in advance"),
    ("etcd:\n  bootstrap: dns-srv\n  srv_domain: example.org\n", "etcd.bootstrap", "dns-srv needs"),
    ('kubernetes_version: "1.36.3"\nuser_data: embedded\netcd:\n  bootstrap: discovery\n', "user_data", "embedded gives each master its own user-data"),
    ("network:\n  addresses: [10.240.0.10, 10.240.0.11, 10.240.0.12]\n", "network.addresses", "drop network.addresses"),
])
def test_a_group_refuses_what_needs_fixed_addresses_or_per_node_user_data(extra: str, key: str, words: str) -> None:
    with pytest.raises(SpecError) as e:
        specmod.parse(spec_text(extra=extra))
    (problem,) = e.value.problems
    assert problem.key == key and words in problem.message
    assert "gcp.masters: mig" in problem.message and "gcp.masters: instances" in problem.message
    assert "\n" not in problem.message
    # the same settings are fine for plain instances
    specmod.parse(spec_text(extra=extra, gcp="  masters: instances\n"))


def test_bootstrap_defaults() -> None:
    assert specmod.parse(spec_text()).etcd.bootstrap == "store"
    v2 = 'kubernetes_version: "1.36.3"\netcd:\n  bootstrap: discovery\n'  # etcd 3.6: the last with v2 discovery
    assert specmod.parse(spec_text(extra=v2)).etcd.bootstrap == "discovery"
    assert specmod.parse(spec_text(extra="etcd:\n  client_port: 2379\n")).etcd.bootstrap == "store"
    assert specmod.parse(spec_text(gcp="  masters: instances\n")).etcd.bootstrap == "static"
    with pytest.raises(SpecError) as e:
        specmod.parse(spec_text(gcp="  masters: asg\n"))
    (problem,) = e.value.problems
    assert problem.key == "gcp.masters" and "expected 'instances' or 'mig'" in problem.message


def test_up_waits_until_the_groups_are_stable_and_bounds_the_wait(gce: FakeGCE, tmp_path: Path) -> None:
    gce.boot_seconds = 0.3  # each managed instance is CREATING this long
    events: list[tuple[str, str, str]] = []
    provider, spec = make(gce, tmp_path, group_timeout=0.1)
    provider.progress = lambda step, status, detail="": events.append((step, status, detail))
    with pytest.raises(ProviderError, match=r"not stable after 0s: demo-mig-us-central1-a \(0/1 running\)"):
        provider.up(Renderer(spec))
    assert ("instance group manager demo-mig-us-central1-a", "waiting", "0/1 running") in events

    provider, spec = make(gce, tmp_path, group_timeout=30)
    provider.progress = lambda step, status, detail="": events.append((step, status, detail))
    provider.up(Renderer(spec))
    assert ("instance group manager demo-mig-us-central1-a", "stable", "1/1 running") in events
    assert {i["status"] for i in gce.resources("instances")} == {"RUNNING"}


@pytest.mark.parametrize("op_error", [False, True], ids=["http-503", "operation-error"])
def test_up_interrupted_at_each_insert_converges_without_duplicates(tmp_path: Path, op_error: bool) -> None:
    for k in range(11):  # firewalls 3, health check, template, MIGs 3, backend service, forwarding rule, LB address
        with FakeGCE(project=PROJECT).running() as fake:
            fake.add_image(IMAGE)
            provider, spec = make(fake, tmp_path / f"{k}-{op_error}")
            fake.faults.append(Fault("insert", op_error=op_error, after=k))
            with pytest.raises(ProviderError):
                provider.up(Renderer(spec))
            result = provider.up(Renderer(spec))
            inv = fake.inventory()
            assert {c: v for c, v in inv.items() if c not in ("instances", "instanceTemplates")} == EXPECTED, k
            assert len(inv["instanceTemplates"]) == 1 and len(inv["instances"]) == 3, k
            assert not result.drift


def test_status_lists_each_groups_instances(gce: FakeGCE, tmp_path: Path) -> None:
    provider, spec = make(gce, tmp_path, spec_text(5))
    provider.up(Renderer(spec))
    st = provider.status()
    by_name = {i["name"]: i for i in gce.resources("instances")}
    assert sorted(n.name for n in st.nodes) == sorted(by_name)
    for n in st.nodes:
        inst = by_name[n.name]
        assert (n.address, n.zone, n.state, n.image) == (inst["networkInterfaces"][0]["networkIP"], inst["zone"].rsplit("/", 1)[1], "RUNNING", IMAGE)
        assert n.extra == {"group": f"demo-mig-{n.zone}", "action": "NONE"}
    groups = st.extra["groups"]
    assert {g: (v["zone"], v["target_size"], v["stable"]) for g, v in groups.items()} == {
        "demo-mig-us-central1-a": ("us-central1-a", 2, True),
        "demo-mig-us-central1-b": ("us-central1-b", 2, True),
        "demo-mig-us-central1-c": ("us-central1-c", 1, True),
    }
    assert sorted(x for v in groups.values() for x in v["instances"]) == sorted(by_name)
    assert st.extra["masters"] == "mig" and st.endpoint == state.load(provider.paths)["gcp"]["endpoint"]


def test_an_instance_deleted_behind_bakerys_back_is_recreated_with_the_same_user_data(gce: FakeGCE, tmp_path: Path) -> None:
    gce.boot_seconds = 0.2
    provider, spec = make(gce, tmp_path)
    provider.up(Renderer(spec))
    victim = next(i for i in gce.resources("instances") if i["zone"].endswith(ZONES[1]))
    client(gce, "Instances").delete_unary(project=PROJECT, zone=ZONES[1], instance=victim["name"])

    st = provider.status()  # the group is already repairing it
    node = next(n for n in st.nodes if n.name == victim["name"])
    assert node.extra["action"] == "RECREATING" and not st.extra["groups"][f"demo-mig-{ZONES[1]}"]["stable"]
    assert provider.up(Renderer(spec)).created == []  # up waits for the repair; nothing new to make
    repaired = next(i for i in gce.resources("instances") if i["name"] == victim["name"])
    assert repaired["id"] != victim["id"] and repaired["status"] == "RUNNING"
    assert user_data(repaired) == SMALL == user_data(victim)
    assert len(gce.resources("instances")) == 3


def test_down_removes_everything_and_a_second_down_finds_nothing(gce: FakeGCE, tmp_path: Path) -> None:
    provider, spec = make(gce, tmp_path)
    provider.up(Renderer(spec))
    deleted = provider.down()
    assert gce.inventory() == {}
    assert deleted.index("backend service demo-apiserver") < deleted.index(f"instance group manager demo-mig-{ZONES[0]}")
    assert max(i for i, d in enumerate(deleted) if d.startswith("instance group manager")) < min(
        i for i, d in enumerate(deleted) if d.startswith("instance template"))
    # the MIGs took their instances; none was deleted alone (its MIG would only have repaired it)
    assert gce.count("delete", "instances") == 0 and not [d for d in deleted if re.fullmatch(r"instance \S+", d)]
    assert "gcp" not in state.load(provider.paths)
    assert provider.down() == []


def test_an_interrupted_down_converges_on_rerun(tmp_path: Path) -> None:
    # forwarding rule, 3 firewalls, backend service, 3 MIGs, template, health check, LB address
    for k in range(11):
        with FakeGCE(project=PROJECT).running() as fake:
            fake.add_image(IMAGE)
            provider, spec = make(fake, tmp_path / f"down-{k}")
            provider.up(Renderer(spec))
            fake.faults.append(Fault("delete", status=503, after=k))
            with pytest.raises(ProviderError):
                provider.down()
            assert fake.inventory() != {}
            first = list(provider.ledger.deleted)
            second = provider.down()
            assert fake.inventory() == {}, k
            assert not set(first) & set(second), k  # nothing deleted twice


def test_plain_masters_left_from_instances_mode_are_reported(gce: FakeGCE, tmp_path: Path) -> None:
    plain, plain_spec = make(gce, tmp_path, spec_text(gcp="  masters: instances\n"))
    plain.up(Renderer(plain_spec))
    provider, spec = make(gce, tmp_path)
    result = provider.up(Renderer(spec))
    assert any("plain masters from gcp.masters: instances still run (demo-master-0, demo-master-1, demo-master-2)" in d for d in result.drift)
    back = plain.up(Renderer(plain_spec))  # and the other way round
    assert any(d.startswith("managed instance groups from gcp.masters: mig still run masters (demo-mig-us-central1-a,") for d in back.drift)
    provider.down()
    assert gce.inventory() == {}


def test_replace_master_is_refused_for_a_group(gce: FakeGCE, tmp_path: Path) -> None:
    provider, spec = make(gce, tmp_path)
    n = plan(spec).nodes[0]
    with pytest.raises(ProviderError, match="no fixed name to replace in place; `bakery rollout` surges the group"):
        provider.replace_master(RenderedNode(n.name, n.address, n.zone, encode(SMALL, "gcp")))


def test_up_wait_checks_the_group_members_behind_the_load_balancer(gce: FakeGCE, tmp_path: Path) -> None:
    provider, spec = make(gce, tmp_path, health_timeout=0.1)
    with pytest.raises(ProviderError, match=r"demo-master-a-[a-z0-9]{4}.* not healthy behind demo-apiserver"):
        provider.up(Renderer(spec), wait=True)
    for inst in gce.resources("instances"):
        gce.health[inst["selfLink"]] = "HEALTHY"
    assert provider.up(Renderer(spec), wait=True).created == []


def test_a_group_made_between_bakerys_get_and_insert_is_reused(gce: FakeGCE, tmp_path: Path) -> None:
    """Another `up` got there first: GCE answers the insert 409 alreadyExists; bakery fetches and reuses."""
    provider, spec = make(gce, tmp_path)
    provider.up(Renderer(spec))
    inventory = gce.inventory()
    gce.faults.append(Fault("get", "instanceGroupManagers", status=404))  # this get misses the group (the race)
    before = len(gce.calls)
    result = provider.up(Renderer(spec))
    assert mutations(gce, before) == ["insert instanceGroupManagers None"]  # refused with 409 ...
    assert sorted(x for x in result.existing if x.startswith("instance group manager")) == [f"instance group manager demo-mig-{z}" for z in ZONES]
    assert result.created == [] and not result.drift and gce.inventory() == inventory  # ... and nothing changed
