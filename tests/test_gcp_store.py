"""The GCP side of the state store against tests/fake_gcs.py: the bucket's settings and
the masters' service account and bucket bindings, read back from the fake."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bakery import spec as specmod
from bakery.errors import ProviderError
from bakery.providers.base import Ledger
from bakery.providers.gcp import iam, storage, storeapi
from bakery.store import location
from bakery.store.gcs import GCSStore
from bakery.store.gcs import default_client as gcs_client
from tests.fake_gcs import FakeGCS, Fault

PROJECT = "test-project"


def make_spec(name: str = "demo", extra: str = "", gcp: str = "") -> specmod.ClusterSpec:
    return specmod.parse(f"name: {name}\nprovider: gcp\ngcp:\n  project: {PROJECT}\n{gcp}{extra}")


@pytest.fixture
def gcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGCS]:
    with FakeGCS(project=PROJECT).running() as fake:
        monkeypatch.setenv(storeapi.STORAGE_ENDPOINT_ENV, fake.url)
        monkeypatch.setenv(storeapi.IAM_ENDPOINT_ENV, fake.url)
        yield fake


def ledger() -> Ledger:
    return Ledger(lambda *a: None)


def test_bucket_account_and_bindings(gcs: FakeGCS) -> None:
    spec = make_spec()
    ident = storage.ensure(spec, ledger())
    name = location.split(location.default_url(spec))[1]
    assert ident == storage.StoreIdentity(f"gs://{name}", name, True, f"demo-bakery@{PROJECT}.iam.gserviceaccount.com")
    b = gcs.buckets[name]
    assert b["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"] is True
    assert b["iamConfiguration"]["publicAccessPrevention"] == "enforced"
    assert b["versioning"] == {"enabled": True} and b["labels"] == {"bakery-cluster": "demo"}
    assert b["location"] == "US-CENTRAL1"
    sa = gcs.accounts[ident.service_account]
    assert sa["description"] == "bakery-cluster=demo"
    policy = gcs.policies[name]
    assert policy["version"] == 3
    ours = {x["role"]: x for x in policy["bindings"] if f"serviceAccount:{ident.service_account}" in x["members"]}
    assert sorted(ours) == ["roles/storage.objectUser", "roles/storage.objectViewer"]
    read = ours["roles/storage.objectViewer"]["condition"]["expression"]
    write = ours["roles/storage.objectUser"]["condition"]["expression"]
    assert f'startsWith("projects/_/buckets/{name}/objects/demo/")' in read
    assert write.count("startsWith") == 3
    for p in ("members", "etcd", "backups"):
        assert f'"projects/_/buckets/{name}/objects/demo/{p}/"' in write
    assert "objects/demo/pki" not in write and "objects/demo/cluster.json" not in write


def test_second_ensure_writes_nothing(gcs: FakeGCS) -> None:
    spec = make_spec()
    storage.ensure(spec, ledger())
    gcs.calls.clear()
    again = ledger()
    storage.ensure(spec, again)
    assert gcs.mutations() == [] and again.created == []
    assert gcs.calls, "it still looked everything up"


def test_settings_are_repaired_in_one_patch(gcs: FakeGCS) -> None:
    spec = make_spec()
    ident = storage.ensure(spec, ledger())
    b = gcs.buckets[ident.bucket]
    b["iamConfiguration"]["publicAccessPrevention"] = "inherited"
    b["versioning"] = {"enabled": False}
    gcs.calls.clear()
    storage.ensure(spec, ledger())
    assert gcs.mutations() == ["bucket.patch"]
    assert b["iamConfiguration"]["publicAccessPrevention"] == "enforced" and b["versioning"] == {"enabled": True}


def test_interrupted_after_any_call_converges(gcs: FakeGCS) -> None:
    spec = make_spec()
    for kind in ("bucket.insert", "iam.create", "bucket.setIamPolicy"):
        gcs.faults.append(Fault(kind, status=403))  # not retried: the run stops there
        with pytest.raises(ProviderError):
            storage.ensure(spec, ledger())
        gcs.faults.clear()
    storage.ensure(spec, ledger())
    name = location.split(location.default_url(spec))[1]
    assert len(gcs.accounts) == 1 and len(gcs.buckets) == 1
    assert sum(1 for x in gcs.policies[name]["bindings"] if "condition" in x) == 2


def test_a_foreign_bucket_or_account_is_refused(gcs: FakeGCS) -> None:
    spec = make_spec(extra="store: {url: gs://taken-name}\n")
    gcs.foreign.add("taken-name")
    with pytest.raises(ProviderError, match="another project"):
        storage.ensure(spec, ledger())
    gcs.foreign.clear()
    iam_path = f"/v1/projects/{PROJECT}/serviceAccounts"
    gcs.handle("POST", iam_path, {}, {}, b'{"accountId": "other-bakery", "serviceAccount": {"description": "mine"}}')
    with pytest.raises(ProviderError, match="not bakery's"):
        storage.ensure(make_spec(name="other"), ledger())


def test_a_given_service_account_is_bound_not_created(gcs: FakeGCS) -> None:
    gcs.handle("POST", f"/v1/projects/{PROJECT}/serviceAccounts", {}, {}, b'{"accountId": "their-masters"}')
    spec = make_spec(gcp=f"  service_account: their-masters@{PROJECT}.iam.gserviceaccount.com\n")
    ident = storage.ensure(spec, ledger())
    assert list(gcs.accounts) == [f"their-masters@{PROJECT}.iam.gserviceaccount.com"]
    assert any(f"serviceAccount:{ident.service_account}" in b["members"] for b in gcs.policies[ident.bucket]["bindings"])
    storage.delete(spec, ledger())
    assert list(gcs.accounts) == [ident.service_account]  # never deleted
    assert not any("condition" in b for b in gcs.policies[ident.bucket]["bindings"])


def test_down_removes_account_and_bindings_keeps_bucket_unless_purge(gcs: FakeGCS) -> None:
    spec = make_spec()
    ident = storage.ensure(spec, ledger())
    store = GCSStore(ident.bucket, client=gcs_client(endpoint=gcs.url))
    store.put("demo/cluster.json", b"1")
    store.put("demo/cluster.json", b"2")
    store.put("demo/etcd/bootstrap", b"{}")
    store.put("demo/members/demo-master-1.json", b"{}")
    gone = ledger()
    storage.delete(spec, gone)
    # the masters' disks went with them: what said their etcd runs goes too, the rest stays
    assert gone.deleted == [f"etcd records etcd/bootstrap, members/demo-master-1.json in gs://{ident.bucket}",
                            f"bucket bindings of {ident.service_account}", f"service-account {ident.service_account}"]
    assert gcs.accounts == {} and ident.bucket in gcs.buckets
    assert store.get("demo/cluster.json") == b"2" and store.list("demo/") == ["demo/cluster.json"]
    gone = ledger()
    storage.delete(spec, gone, purge=True)
    # the bucket is versioned: the deleted records' versions are purged with the rest
    assert gone.deleted == [f"4 object versions under gs://{ident.bucket}/demo/", f"bucket {ident.bucket}"]
    assert ident.bucket not in gcs.buckets


def test_purge_keeps_a_users_bucket_and_their_objects(gcs: FakeGCS) -> None:
    client = gcs_client(endpoint=gcs.url)
    client.create_bucket("users-bucket")
    GCSStore("users-bucket", client=client).put("their/data", b"keep")
    spec = make_spec(extra="store: {url: gs://users-bucket/k8s}\n")
    ident = storage.ensure(spec, ledger())
    assert not ident.owned
    GCSStore("users-bucket", "k8s", client=client).put("demo/pki/ca.crt", b"x")
    storage.delete(spec, ledger(), purge=True)
    assert gcs.live("users-bucket") == {"their/data": b"keep"}


def test_compute_override_without_storage_and_iam_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (storeapi.STORAGE_ENDPOINT_ENV, storeapi.IAM_ENDPOINT_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BAKERY_GCP_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(ProviderError, match="real storage and IAM"):
        storage.ensure(make_spec(), ledger())


def test_account_ids_fit_iams_rule() -> None:
    for cluster in ("a", "demo", "x" * 32, "abc-" + "d" * 28):
        aid = iam.account_id(cluster)
        assert 6 <= len(aid) <= 30 and iam.ACCOUNT_RE.match(aid), aid
