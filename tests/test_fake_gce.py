"""The fake GCE server answers the real google-cloud-compute clients the way GCE does."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from tests.fake_gce import FakeGCE, Fault

P, R, Z = "test-project", "us-central1", "us-central1-a"


@pytest.fixture
def gce() -> Iterator[FakeGCE]:
    with FakeGCE(project=P).running() as fake:
        fake.add_image("img")
        yield fake


def client(gce: FakeGCE, name: str) -> Any:
    return getattr(compute_v1, f"{name}Client")(
        transport="rest", client_options={"api_endpoint": gce.url}, credentials=AnonymousCredentials()
    )


def address(name: str, **labels: str) -> Any:
    return compute_v1.Address(name=name, address_type="INTERNAL", labels=labels)


def label(addresses: Any, name: str, **labels: str) -> None:
    """Labels on an address, as GCE takes them: setLabels with the current fingerprint."""
    fingerprint = addresses.get(project=P, region=R, address=name).label_fingerprint
    addresses.set_labels_unary(project=P, region=R, resource=name, region_set_labels_request_resource=
                               compute_v1.RegionSetLabelsRequest(labels=labels, label_fingerprint=fingerprint))


def instance(name: str, ip: str, value: str = "#cloud-config\n") -> Any:
    return compute_v1.Instance(
        name=name,
        machine_type=f"zones/{Z}/machineTypes/e2-small",
        disks=[compute_v1.AttachedDisk(boot=True, initialize_params=compute_v1.AttachedDiskInitializeParams(source_image=f"projects/{P}/global/images/img"))],
        network_interfaces=[compute_v1.NetworkInterface(network_i_p=ip)],
        metadata=compute_v1.Metadata(items=[compute_v1.Items(key="user-data", value=value)]),
    )


def test_duplicate_name_is_409_already_exists_and_missing_is_404(gce: FakeGCE) -> None:
    addresses = client(gce, "Addresses")
    addresses.insert_unary(project=P, region=R, address_resource=address("a"))
    with pytest.raises(exceptions.Conflict) as e:
        addresses.insert_unary(project=P, region=R, address_resource=address("a"))
    assert e.value.errors[0]["reason"] == "alreadyExists"
    with pytest.raises(exceptions.NotFound) as nf:
        addresses.get(project=P, region=R, address="missing")
    assert nf.value.errors[0]["reason"] == "notFound"
    with pytest.raises(exceptions.NotFound):
        addresses.delete_unary(project=P, region=R, address="missing")
    assert gce.count("insert", "addresses") == 2


def test_list_filters_by_label_and_name_across_pages(gce: FakeGCE) -> None:
    gce.page_size = 2
    addresses = client(gce, "Addresses")
    for i in range(5):
        addresses.insert_unary(project=P, region=R, address_resource=address(f"a{i}"))
        label(addresses, f"a{i}", **{"bakery-cluster": "x" if i % 2 else "y"})

    def names(flt: str) -> list[str]:
        return [a.name for a in addresses.list(request=compute_v1.ListAddressesRequest(project=P, region=R, filter=flt))]

    assert names("") == ["a0", "a1", "a2", "a3", "a4"]
    assert gce.count("list", "addresses") == 3  # pages of 2, 2, 1
    assert names("labels.bakery-cluster = y") == ["a0", "a2", "a4"]
    assert names('(labels.bakery-cluster = "x") (name != a1)') == ["a3"]
    with pytest.raises(exceptions.BadRequest):
        names("labels.bakery-cluster ~ x")


def test_operations_run_then_finish_through_wait(gce: FakeGCE) -> None:
    gce.op_seconds = 0.2
    op = client(gce, "Addresses").insert_unary(project=P, region=R, address_resource=address("a"))
    assert op.status == compute_v1.Operation.Status.RUNNING
    done = client(gce, "RegionOperations").wait(project=P, region=R, operation=op.name)
    assert done.status == compute_v1.Operation.Status.DONE
    assert not done.error.errors
    with pytest.raises(exceptions.NotFound):  # operations live in their scope
        client(gce, "ZoneOperations").get(project=P, zone=Z, operation=op.name)


def test_an_operation_error_creates_nothing(gce: FakeGCE) -> None:
    gce.faults.append(Fault("insert", "addresses", op_error=True))
    addresses = client(gce, "Addresses")
    op = addresses.insert_unary(project=P, region=R, address_resource=address("a"))
    done = client(gce, "RegionOperations").wait(project=P, region=R, operation=op.name)
    assert done.error.errors[0].code == "QUOTA_EXCEEDED"
    with pytest.raises(exceptions.NotFound):
        addresses.get(project=P, region=R, address="a")


def test_injected_http_fault_then_the_call_succeeds(gce: FakeGCE) -> None:
    gce.faults.append(Fault("insert", "addresses", status=503, after=1))
    addresses = client(gce, "Addresses")
    addresses.insert_unary(project=P, region=R, address_resource=address("a"))
    with pytest.raises(exceptions.ServiceUnavailable):
        addresses.insert_unary(project=P, region=R, address_resource=address("b"))
    addresses.insert_unary(project=P, region=R, address_resource=address("b"))
    assert sorted(gce.inventory()["addresses"]) == ["a", "b"]


def test_metadata_value_over_262144_bytes_is_rejected(gce: FakeGCE) -> None:
    instances = client(gce, "Instances")
    with pytest.raises(exceptions.BadRequest) as e:
        instances.insert_unary(project=P, zone=Z, instance_resource=instance("big", "10.0.0.2", "x" * 262_145))
    assert "262144" in e.value.message
    instances.insert_unary(project=P, zone=Z, instance_resource=instance("ok", "10.0.0.2", "x" * 262_144))
    assert gce.inventory()["instances"] == ["ok"]


def test_missing_image_is_404_and_duplicate_network_ip_refused(gce: FakeGCE) -> None:
    instances = client(gce, "Instances")
    body = instance("a", "10.0.0.2")
    body.disks[0].initialize_params.source_image = f"projects/{P}/global/images/nope"
    with pytest.raises(exceptions.NotFound):
        instances.insert_unary(project=P, zone=Z, instance_resource=body)
    instances.insert_unary(project=P, zone=Z, instance_resource=instance("a", "10.0.0.2"))
    with pytest.raises(exceptions.BadRequest):
        instances.insert_unary(project=P, zone=Z, instance_resource=instance("b", "10.0.0.2"))


def test_in_use_resources_cannot_be_deleted_and_members_not_added_twice(gce: FakeGCE) -> None:
    addresses, instances, groups = client(gce, "Addresses"), client(gce, "Instances"), client(gce, "InstanceGroups")
    addresses.insert_unary(project=P, region=R, address_resource=compute_v1.Address(name="m", address_type="INTERNAL", address="10.0.0.5"))
    instances.insert_unary(project=P, zone=Z, instance_resource=instance("m", "10.0.0.5"))
    groups.insert_unary(project=P, zone=Z, instance_group_resource=compute_v1.InstanceGroup(name="g"))
    add = compute_v1.InstanceGroupsAddInstancesRequest(instances=[compute_v1.InstanceReference(instance=f"projects/{P}/zones/{Z}/instances/m")])
    groups.add_instances_unary(project=P, zone=Z, instance_group="g", instance_groups_add_instances_request_resource=add)
    with pytest.raises(exceptions.BadRequest) as twice:
        groups.add_instances_unary(project=P, zone=Z, instance_group="g", instance_groups_add_instances_request_resource=add)
    assert twice.value.errors[0]["reason"] == "memberAlreadyExists"
    assert gce.members("g") == ["m"]
    with pytest.raises(exceptions.BadRequest) as in_use:
        addresses.delete_unary(project=P, region=R, address="m")
    assert in_use.value.errors[0]["reason"] == "resourceInUseByAnotherResource"
    instances.delete_unary(project=P, zone=Z, instance="m")
    assert gce.members("g") == []
    addresses.delete_unary(project=P, region=R, address="m")
    assert gce.inventory() == {"instanceGroups": ["g"]}


def test_set_metadata_and_labels_need_the_current_fingerprint(gce: FakeGCE) -> None:
    instances = client(gce, "Instances")
    body = instance("m", "10.0.0.2")
    body.labels = {"bakery-cluster": "demo"}
    instances.insert_unary(project=P, zone=Z, instance_resource=body)
    items = [compute_v1.Items(key="user-data", value="#cloud-config\n# v2\n")]
    with pytest.raises(exceptions.PreconditionFailed) as missing:  # no fingerprint
        instances.set_metadata_unary(project=P, zone=Z, instance="m", metadata_resource=compute_v1.Metadata(items=items))
    assert missing.value.code == 412 and missing.value.errors[0]["reason"] == "conditionNotMet"
    stale = instances.get(project=P, zone=Z, instance="m").metadata.fingerprint
    instances.set_metadata_unary(project=P, zone=Z, instance="m", metadata_resource=compute_v1.Metadata(items=items, fingerprint=stale))
    with pytest.raises(exceptions.PreconditionFailed):  # the fingerprint changed with the metadata
        instances.set_metadata_unary(project=P, zone=Z, instance="m", metadata_resource=compute_v1.Metadata(items=items, fingerprint=stale))
    got = instances.get(project=P, zone=Z, instance="m")
    assert [i.value for i in got.metadata.items] == ["#cloud-config\n# v2\n"] and got.metadata.fingerprint != stale
    labels = compute_v1.InstancesSetLabelsRequest(labels={"bakery-cluster": "other"})
    with pytest.raises(exceptions.PreconditionFailed):
        instances.set_labels_unary(project=P, zone=Z, instance="m", instances_set_labels_request_resource=labels)
    labels.label_fingerprint = got.label_fingerprint
    instances.set_labels_unary(project=P, zone=Z, instance="m", instances_set_labels_request_resource=labels)
    assert instances.get(project=P, zone=Z, instance="m").labels == {"bakery-cluster": "other"}


@pytest.mark.parametrize("kind", ["Addresses", "ForwardingRules"])
def test_labels_in_an_address_or_forwarding_rule_insert_are_not_kept_set_labels_sets_them(gce: FakeGCE, kind: str) -> None:
    """Compute API reference: their labels "can only be added or modified by the setLabels method"."""
    c = client(gce, kind)
    if kind == "Addresses":
        c.insert_unary(project=P, region=R, address_resource=address("lb", **{"bakery-cluster": "demo"}))
        get = lambda: c.get(project=P, region=R, address="lb")  # noqa: E731
    else:
        c.insert_unary(project=P, region=R, forwarding_rule_resource=compute_v1.ForwardingRule(
            name="lb", I_p_protocol="TCP", ports=["6443"], labels={"bakery-cluster": "demo"}))
        get = lambda: c.get(project=P, region=R, forwarding_rule="lb")  # noqa: E731
    first = get()
    assert dict(first.labels) == {} and first.label_fingerprint
    listed = c.list(request=getattr(compute_v1, f"List{kind}Request")(project=P, region=R, filter="labels.bakery-cluster = demo"))
    assert [x.name for x in listed] == []
    request = compute_v1.RegionSetLabelsRequest(labels={"bakery-cluster": "demo"})
    with pytest.raises(exceptions.PreconditionFailed) as missing:  # no fingerprint
        c.set_labels_unary(project=P, region=R, resource="lb", region_set_labels_request_resource=request)
    assert missing.value.code == 412 and missing.value.errors[0]["reason"] == "conditionNotMet"
    request.label_fingerprint = first.label_fingerprint
    c.set_labels_unary(project=P, region=R, resource="lb", region_set_labels_request_resource=request)
    assert dict(get().labels) == {"bakery-cluster": "demo"} and get().label_fingerprint != first.label_fingerprint
    with pytest.raises(exceptions.PreconditionFailed):  # stale: the labels changed since
        c.set_labels_unary(project=P, region=R, resource="lb", region_set_labels_request_resource=request)


def test_names_labels_descriptions_and_required_fields_are_checked(gce: FakeGCE) -> None:
    addresses, instances, firewalls = client(gce, "Addresses"), client(gce, "Instances"), client(gce, "Firewalls")
    for bad in ({"Bakery-Cluster": "demo"}, {"bakery-cluster": "Demo"}, {"bakery-cluster": "a" * 64}, {f"k{i}": "v" for i in range(65)}):
        with pytest.raises(exceptions.BadRequest) as e:
            addresses.insert_unary(project=P, region=R, address_resource=address("a", **bad))
        assert e.value.errors[0]["reason"] == "invalid"
    with pytest.raises(exceptions.BadRequest):
        addresses.insert_unary(project=P, region=R, address_resource=compute_v1.Address(name="Upper", address_type="INTERNAL"))
    with pytest.raises(exceptions.BadRequest):
        addresses.insert_unary(project=P, region=R, address_resource=compute_v1.Address(name="a", description="x" * 2049))
    body = instance("m", "10.0.0.2")
    body.machine_type = ""
    with pytest.raises(exceptions.BadRequest) as required:
        instances.insert_unary(project=P, zone=Z, instance_resource=body)
    assert required.value.errors[0]["reason"] == "required"
    body = instance("m", "10.0.0.2")
    body.disks[0].boot = False
    with pytest.raises(exceptions.BadRequest):
        instances.insert_unary(project=P, zone=Z, instance_resource=body)
    rule = compute_v1.Firewall(name="fw", network=f"projects/{P}/global/networks/default", source_ranges=["banana"],
                               allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=["6443"])])
    with pytest.raises(exceptions.BadRequest):
        firewalls.insert_unary(project=P, firewall_resource=rule)
    assert gce.inventory() == {}


def test_members_of_another_network_and_removal_of_non_members_are_refused(gce: FakeGCE) -> None:
    instances, groups = client(gce, "Instances"), client(gce, "InstanceGroups")
    body = instance("m", "10.0.0.2")
    body.network_interfaces[0].network = f"projects/{P}/global/networks/other"
    instances.insert_unary(project=P, zone=Z, instance_resource=body)
    instances.insert_unary(project=P, zone=Z, instance_resource=instance("n", "10.0.0.3"))
    groups.insert_unary(project=P, zone=Z, instance_group_resource=compute_v1.InstanceGroup(name="g", network=f"projects/{P}/global/networks/default"))

    def refs(*names: str) -> list[Any]:
        return [compute_v1.InstanceReference(instance=f"projects/{P}/zones/{Z}/instances/{n}") for n in names]

    with pytest.raises(exceptions.BadRequest) as other:
        groups.add_instances_unary(project=P, zone=Z, instance_group="g",
                                   instance_groups_add_instances_request_resource=compute_v1.InstanceGroupsAddInstancesRequest(instances=refs("m")))
    assert "different network" in other.value.message
    remove = compute_v1.InstanceGroupsRemoveInstancesRequest
    with pytest.raises(exceptions.BadRequest):  # n exists but is not a member
        groups.remove_instances_unary(project=P, zone=Z, instance_group="g", instance_groups_remove_instances_request_resource=remove(instances=refs("n")))
    with pytest.raises(exceptions.NotFound):
        groups.remove_instances_unary(project=P, zone=Z, instance_group="g", instance_groups_remove_instances_request_resource=remove(instances=refs("gone")))
    groups.add_instances_unary(project=P, zone=Z, instance_group="g",
                               instance_groups_add_instances_request_resource=compute_v1.InstanceGroupsAddInstancesRequest(instances=refs("n")))
    groups.remove_instances_unary(project=P, zone=Z, instance_group="g", instance_groups_remove_instances_request_resource=remove(instances=refs("n")))
    assert gce.members("g") == []


# -- managed instance groups --------------------------------------------------------


def template(gce: FakeGCE, name: str = "tpl", value: str = "#cloud-config\n# small\n") -> str:
    body = compute_v1.InstanceTemplate(name=name, properties=compute_v1.InstanceProperties(
        machine_type="e2-small",
        disks=[compute_v1.AttachedDisk(boot=True, initialize_params=compute_v1.AttachedDiskInitializeParams(source_image=f"projects/{P}/global/images/img"))],
        network_interfaces=[compute_v1.NetworkInterface(network=f"projects/{P}/global/networks/default")],
        metadata=compute_v1.Metadata(items=[compute_v1.Items(key="user-data", value=value)]),
        labels={"role": "master"},
    ))
    client(gce, "InstanceTemplates").insert_unary(project=P, instance_template_resource=body)
    return f"projects/{P}/global/instanceTemplates/{name}"


def mig(name: str, tpl: str, size: int, **kw: Any) -> Any:
    return compute_v1.InstanceGroupManager(name=name, base_instance_name="m", instance_template=tpl, target_size=size, **kw)


def managed(gce: FakeGCE, name: str = "g") -> list[Any]:
    return list(client(gce, "InstanceGroupManagers").list_managed_instances(project=P, zone=Z, instance_group_manager=name))


def test_a_mig_keeps_its_target_size_from_the_template(gce: FakeGCE) -> None:
    migs, instances = client(gce, "InstanceGroupManagers"), client(gce, "Instances")
    tpl = template(gce)
    migs.insert_unary(project=P, zone=Z, instance_group_manager_resource=mig("g", tpl, 3))
    got = migs.get(project=P, zone=Z, instance_group_manager="g")
    assert got.instance_group.endswith(f"/zones/{Z}/instanceGroups/g") and got.status.is_stable
    assert got.update_policy.type_ == "PROACTIVE" and got.instance_lifecycle_policy.default_action_on_failure == "REPAIR"  # GCE's defaults
    members = managed(gce)
    assert len(members) == 3 and all(re.fullmatch(r"m-[a-z0-9]{4}", m.name) for m in members)
    assert {m.instance_status for m in members} == {"RUNNING"} and {m.current_action for m in members} == {"NONE"}
    inst = instances.get(project=P, zone=Z, instance=members[0].name)
    meta = {i.key: i.value for i in inst.metadata.items}
    assert meta["user-data"] == "#cloud-config\n# small\n"
    assert meta["instance-template"] == tpl and meta["created-by"].endswith(f"/zones/{Z}/instanceGroupManagers/g")
    assert inst.machine_type.endswith(f"/zones/{Z}/machineTypes/e2-small") and inst.labels == {"role": "master"}
    assert gce.members("g") == sorted(m.name for m in members)  # the group GCE made for it

    migs.resize_unary(project=P, zone=Z, instance_group_manager="g", size=1)
    assert len(managed(gce)) == 1 and len(gce.resources("instances")) == 1
    migs.delete_instances_unary(project=P, zone=Z, instance_group_manager="g",
                                instance_group_managers_delete_instances_request_resource=compute_v1.InstanceGroupManagersDeleteInstancesRequest(
                                    instances=[f"projects/{P}/zones/{Z}/instances/{managed(gce)[0].name}"]))
    assert migs.get(project=P, zone=Z, instance_group_manager="g").target_size == 0 and gce.resources("instances") == []
    with pytest.raises(exceptions.BadRequest):
        migs.resize_unary(project=P, zone=Z, instance_group_manager="g", size=-1)


def test_an_instance_deleted_behind_the_groups_back_is_repaired_under_its_name(gce: FakeGCE) -> None:
    migs, instances = client(gce, "InstanceGroupManagers"), client(gce, "Instances")
    gce.boot_seconds = 0.3
    migs.insert_unary(project=P, zone=Z, instance_group_manager_resource=mig("g", template(gce), 2))
    assert not migs.get(project=P, zone=Z, instance_group_manager="g").status.is_stable  # still creating
    assert {m.current_action for m in managed(gce)} == {"CREATING"}
    time.sleep(0.35)
    assert migs.get(project=P, zone=Z, instance_group_manager="g").status.is_stable
    victim = managed(gce)[0]
    instances.delete_unary(project=P, zone=Z, instance=victim.name)
    again = {m.name: m for m in managed(gce)}
    assert victim.name in again and again[victim.name].id != victim.id and again[victim.name].current_action == "RECREATING"
    assert migs.get(project=P, zone=Z, instance_group_manager="g").current_actions.recreating == 1
    time.sleep(0.35)
    assert {m.instance_status for m in managed(gce)} == {"RUNNING"}
    meta = {i.key: i.value for i in instances.get(project=P, zone=Z, instance=victim.name).metadata.items}
    assert meta["user-data"] == "#cloud-config\n# small\n"
    gce.boot_seconds = 0.0
    stopped = next(i for items in gce.store.values() for i in items.values() if i.get("name") == victim.name and "status" in i)
    stopped["status"] = "TERMINATED"  # a VM that stops is repaired too (GCE: instanceLifecyclePolicy REPAIR)
    again = {m.name: m for m in managed(gce)}
    assert again[victim.name].id != stopped["id"] and again[victim.name].instance_status == "RUNNING"


def test_mig_errors_are_gces(gce: FakeGCE) -> None:
    migs, templates = client(gce, "InstanceGroupManagers"), client(gce, "InstanceTemplates")
    groups, services = client(gce, "InstanceGroups"), client(gce, "RegionBackendServices")
    with pytest.raises(exceptions.NotFound):
        migs.insert_unary(project=P, zone=Z, instance_group_manager_resource=mig("g", f"projects/{P}/global/instanceTemplates/none", 1))
    tpl = template(gce)
    with pytest.raises(exceptions.BadRequest, match="baseInstanceName"):
        migs.insert_unary(project=P, zone=Z, instance_group_manager_resource=compute_v1.InstanceGroupManager(name="g", instance_template=tpl, target_size=1))
    with pytest.raises(exceptions.BadRequest, match=r"\[0, 3600\]"):
        migs.insert_unary(project=P, zone=Z, instance_group_manager_resource=mig(
            "g", tpl, 1, auto_healing_policies=[compute_v1.InstanceGroupManagerAutoHealingPolicy(initial_delay_sec=3601)]))
    groups.insert_unary(project=P, zone=Z, instance_group_resource=compute_v1.InstanceGroup(name="taken"))
    with pytest.raises(exceptions.Conflict):  # the name of an existing instance group
        migs.insert_unary(project=P, zone=Z, instance_group_manager_resource=mig("taken", tpl, 1))
    migs.insert_unary(project=P, zone=Z, instance_group_manager_resource=mig("g", tpl, 1))
    with pytest.raises(exceptions.Conflict) as dup:
        migs.insert_unary(project=P, zone=Z, instance_group_manager_resource=mig("g", tpl, 1))
    assert dup.value.errors[0]["reason"] == "alreadyExists"

    with pytest.raises(exceptions.BadRequest) as in_use:
        templates.delete_unary(project=P, instance_template="tpl")
    assert in_use.value.errors[0]["reason"] == "resourceInUseByAnotherResource"
    assert in_use.value.message.endswith(f": The instance_template resource '{tpl}' is already being used by "
                                         f"'projects/{P}/zones/{Z}/instanceGroupManagers/g'")
    with pytest.raises(exceptions.BadRequest) as managed_group:
        groups.delete_unary(project=P, zone=Z, instance_group="g")
    assert managed_group.value.errors[0]["reason"] == "resourceInUseByAnotherResource"
    add = compute_v1.InstanceGroupsAddInstancesRequest(instances=[compute_v1.InstanceReference(instance=f"projects/{P}/zones/{Z}/instances/x")])
    with pytest.raises(exceptions.BadRequest, match="managed by"):
        groups.add_instances_unary(project=P, zone=Z, instance_group="g", instance_groups_add_instances_request_resource=add)

    client(gce, "RegionHealthChecks").insert_unary(project=P, region=R, health_check_resource=compute_v1.HealthCheck(name="hc", type_="TCP"))
    services.insert_unary(project=P, region=R, backend_service_resource=compute_v1.BackendService(
        name="svc", health_checks=[f"projects/{P}/regions/{R}/healthChecks/hc"],
        backends=[compute_v1.Backend(group=f"projects/{P}/zones/{Z}/instanceGroups/g")]))
    with pytest.raises(exceptions.BadRequest) as backend:
        migs.delete_unary(project=P, zone=Z, instance_group_manager="g")
    assert backend.value.errors[0]["reason"] == "resourceInUseByAnotherResource" and "backendServices/svc" in backend.value.message
    services.delete_unary(project=P, region=R, backend_service="svc")

    other = template(gce, "tpl2", "#cloud-config\n# v2\n")
    migs.set_instance_template_unary(project=P, zone=Z, instance_group_manager="g",
                                     instance_group_managers_set_instance_template_request_resource=compute_v1.InstanceGroupManagersSetInstanceTemplateRequest(instance_template=other))
    templates.delete_unary(project=P, instance_template="tpl")  # no manager uses it any more
    migs.delete_unary(project=P, zone=Z, instance_group_manager="g")  # takes its instances and its group
    assert gce.inventory() == {"healthChecks": ["hc"], "instanceGroups": ["taken"], "instanceTemplates": ["tpl2"]}
