"""The local master group's membership (bakery/providers/local/group.py): who the masters
are now, and how a new one gets its name, slot and address. Pure but for the file."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from bakery import spec as spec_mod
from bakery import topology
from bakery.errors import ProviderError
from bakery.providers.local import group
from bakery.providers.local.net import net_plan


def _plan(masters: int = 3, subnet: str = "10.240.0.0/24") -> topology.ClusterPlan:
    s = spec_mod.ClusterSpec.model_validate({"name": "g", "provider": "local", "masters": masters,
                                             "network": {"subnet": subnet}})
    return topology.plan(s, lb_ips=("127.0.0.1",))


def test_a_group_starts_as_the_plans_masters() -> None:
    plan = _plan()
    g = group.initial(plan)
    assert [(m.name, m.slot, m.address) for m in g.members] == [(n.name, n.index, n.address) for n in plan.nodes]
    assert g.last_host == max((n.address for n in plan.nodes), key=ipaddress.IPv4Address)


def test_a_new_member_has_a_new_name_the_free_slot_and_an_address_no_one_held() -> None:
    plan = _plan()
    g = group.without(group.initial(plan), "g-master-1")
    g, m = group.allocate(g, "g", "10.240.0.0/24", {"10.240.0.1"})
    assert m.name == "g-master-r1" and m.slot == 1 and m.zone == plan.nodes[1].zone
    assert m.address not in {n.address for n in plan.nodes} | {"10.240.0.1"}
    g, m2 = group.allocate(g, "g", "10.240.0.0/24", {"10.240.0.1"})  # a surge: one more than the plan
    assert m2.name == "g-master-r2" and m2.slot == 3 and m2.address not in {m.address, *(n.address for n in plan.nodes)}
    assert len({x.address for x in g.members}) == len(g.members) == 4
    assert not any(x.name in {n.name for n in plan.nodes} - {"g-master-0", "g-master-2"} for x in g.members)


def test_addresses_wrap_around_the_subnet_and_reuse_a_retired_one_only_when_all_were_used() -> None:
    plan = _plan(masters=3, subnet="10.9.0.0/28")  # 14 hosts; the plan's masters at .10, .11, .12
    g = group.initial(plan)
    seen = []
    for _ in range(20):  # bounded: replace the first member again and again
        g = group.without(g, g.members[0].name)
        g, m = group.allocate(g, "g", "10.9.0.0/28", {"10.9.0.1"})
        seen.append(m.address)
        assert m.address != "10.9.0.1" and len({x.address for x in g.members}) == len(g.members)
    assert len(set(seen[:10])) == 10  # every free address once before any comes back


def test_a_full_subnet_is_a_clear_error() -> None:
    plan = _plan(masters=3, subnet="10.9.0.8/30")  # two hosts: .9 and .10
    g = group.Group(members=(group.Member("a", 0, "10.9.0.9", "local"), group.Member("b", 1, "10.9.0.10", "local")),
                    last_host="10.9.0.10")
    with pytest.raises(ProviderError, match="no free address"):
        group.allocate(g, plan.name, "10.9.0.8/30", set())


def test_saved_and_loaded_as_is_and_a_damaged_record_names_its_file(tmp_path: Path) -> None:
    plan = _plan()
    path = tmp_path / "group.json"
    assert group.load(path, plan) == group.initial(plan)  # nothing recorded yet
    g, _ = group.allocate(group.without(group.initial(plan), "g-master-0"), "g", "10.240.0.0/24", set())
    group.save(path, g)
    assert group.load(path, plan) == g
    path.write_text(json.dumps({"version": 1, "members": "x"}))
    with pytest.raises(ProviderError, match=f"{path}: not a local group record"):
        group.load(path, plan)
    path.write_text("{")
    with pytest.raises(ProviderError, match=f"{path}: unreadable"):
        group.load(path, plan)


def test_the_net_plan_follows_the_group_slots_pick_ports() -> None:
    plan = _plan()
    s = plan.spec
    net = net_plan(s, plan, [("g-master-0", 0, "10.240.0.10"), ("g-master-r1", 1, "10.240.0.40")])
    assert [n.name for n in net.nodes] == ["g-master-0", "g-master-r1"]
    assert net.node("g-master-r1").address == "10.240.0.40"
    assert net.node("g-master-r1").etcd_port == net_plan(s, plan).nodes[1].etcd_port  # the slot's ports
    assert net_plan(s, plan) == net_plan(s, plan, [(n.name, n.index, n.address) for n in plan.nodes])
