"""The Store contract, run over all three backends: a folder, S3 (boto3 against moto's
server) and GCS (google-cloud-storage against tests/fake_gcs.py). Every backend must
answer the same way: the agent and the operator code never ask which one they hold."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bakery.errors import StoreError, StoreNotFound
from bakery.store import Store, layout, open_store
from bakery.store.folder import FolderStore
from bakery.store.gcs import GCSStore
from bakery.store.gcs import default_client as gcs_client
from bakery.store.s3 import S3Store
from bakery.store.sync import upload
from tests.fake_gcs import FakeGCS
from tests.moto_server import Calls, Moto, moto, moto_session  # noqa: F401

BUCKET = "bakery-store-test"


@dataclass
class Backend:
    store: Store
    calls: Any  # () -> number of API calls made so far (0 for the folder)
    other: Store  # the same bucket/folder under another root prefix


@pytest.fixture(scope="module")
def gcs_server() -> Iterator[FakeGCS]:
    with FakeGCS().running() as fake:
        yield fake


@pytest.fixture(params=["folder", "s3", "gcs"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "folder":
        return Backend(FolderStore(tmp_path / "store" / "root"), lambda: 0, FolderStore(tmp_path / "store" / "other"))
    if request.param == "s3":
        m: Moto = request.getfixturevalue("moto")
        calls = Calls()
        client = m.client("s3", calls)
        client.create_bucket(Bucket=BUCKET)
        return Backend(S3Store(BUCKET, "root", client=client), lambda: len(calls.log), S3Store(BUCKET, "other", client=client))
    fake: FakeGCS = request.getfixturevalue("gcs_server")
    client = gcs_client(endpoint=fake.url)
    name = f"{BUCKET}-{len(fake.buckets)}"
    client.create_bucket(name)
    return Backend(GCSStore(name, "root", client=client), lambda: len(fake.calls), GCSStore(name, "other", client=client))


def test_put_get_overwrite(backend: Backend) -> None:
    s = backend.store
    blob = bytes(range(256)) * 40
    s.put("demo/pki/ca.crt", blob)
    assert s.get("demo/pki/ca.crt") == blob
    s.put("demo/pki/ca.crt", b"second")
    assert s.get("demo/pki/ca.crt") == b"second"
    s.put("demo/empty", b"")
    assert s.get("demo/empty") == b""


def test_missing_object_is_store_not_found_naming_the_key(backend: Backend) -> None:
    s = backend.store
    s.put("demo/cluster.json", b"secret-bytes")
    with pytest.raises(StoreNotFound) as e:
        s.get("demo/etcd/bootstrapped")
    assert "demo/etcd/bootstrapped" in str(e.value) and s.url in str(e.value)
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no SDK traceback behind it
    assert e.value.exit_code == 8


def test_put_if_absent_has_exactly_one_winner(backend: Backend) -> None:
    s = backend.store
    key = "demo/etcd/bootstrap"
    n = 8
    start = threading.Barrier(n)

    def claim(i: int) -> bool:
        start.wait(timeout=30)
        return s.put_if_absent(key, f"demo-master-{i}".encode())

    with ThreadPoolExecutor(n) as pool:
        won = list(pool.map(claim, range(n)))
    assert won.count(True) == 1
    assert s.get(key) == f"demo-master-{won.index(True)}".encode()
    assert s.put_if_absent(key, b"late") is False
    assert s.get(key) == f"demo-master-{won.index(True)}".encode()
    s.delete(key)
    assert s.put_if_absent(key, b"after delete") is True


def test_list_is_a_key_prefix_sorted_and_rooted(backend: Backend) -> None:
    s = backend.store
    for key in ("demo/members/m-1.json", "demo/members/m-0.json", "demo/membersx", "demo/pki/ca.crt", "demo2/cluster.json"):
        s.put(key, b"x")
    backend.other.put("demo/members/foreign.json", b"y")
    assert s.list("demo/members/") == ["demo/members/m-0.json", "demo/members/m-1.json"]
    assert s.list("demo/members") == ["demo/members/m-0.json", "demo/members/m-1.json", "demo/membersx"]
    assert s.list("demo/") == ["demo/members/m-0.json", "demo/members/m-1.json", "demo/membersx", "demo/pki/ca.crt"]
    assert s.list() == [*s.list("demo/"), "demo2/cluster.json"]
    assert s.list("nothing/") == []
    assert backend.other.list() == ["demo/members/foreign.json"]


def test_list_pages_beyond_one_thousand_keys(backend: Backend) -> None:
    s = backend.store
    keys = [f"demo/backups/{i:05d}.db" for i in range(1003)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s.put(k, b""), keys))
    assert s.list("demo/backups/") == keys


def test_delete_removes_and_a_missing_object_is_not_an_error(backend: Backend) -> None:
    s = backend.store
    s.put("demo/members/m-0.json", b"{}")
    s.delete("demo/members/m-0.json")
    s.delete("demo/members/m-0.json")
    s.delete("demo/never")
    assert s.list("demo/") == []
    with pytest.raises(StoreNotFound):
        s.get("demo/members/m-0.json")


@pytest.mark.parametrize("key", ["", "/abs", "../x", "demo/../x", "demo//x", "demo/.hidden", "demo/-x", "demo/a b",
                                 "demo/x/", "demo/\u00e9", "a" * 513])
def test_bad_keys_are_refused_before_any_call(backend: Backend, key: str) -> None:
    s = backend.store
    before = backend.calls()
    for call in (lambda: s.get(key), lambda: s.put(key, b"x"), lambda: s.put_if_absent(key, b"x"), lambda: s.delete(key)):
        with pytest.raises(StoreError) as e:
            call()
        assert not isinstance(e.value, StoreNotFound)
    assert backend.calls() == before


def test_bad_prefixes_are_refused(backend: Backend) -> None:
    for prefix in ("../", "/x", "a//", "a b"):
        with pytest.raises(StoreError):
            backend.store.list(prefix)


def test_missing_bucket_is_one_line_naming_it(moto: Moto, gcs_server: FakeGCS) -> None:  # noqa: F811
    stores = [S3Store("no-such-bucket-here", client=moto.client("s3")),
              GCSStore("no-such-bucket-here", client=gcs_client(endpoint=gcs_server.url))]
    for s in stores:
        for call in (lambda s=s: s.get("demo/x"), lambda s=s: s.put("demo/x", b"secret"), lambda s=s: s.list("demo/")):
            with pytest.raises(StoreError) as e:
                call()
            assert not isinstance(e.value, StoreNotFound)
            text = str(e.value)
            assert "no-such-bucket-here" in text and "\n" not in text and "secret" not in text
            assert "NoSuchBucket" in text or "notFound" in text
            assert e.value.__cause__ is None


def test_s3_access_denied_is_named(moto: Moto) -> None:  # noqa: F811
    # What S3 answers a role without s3:GetObject (injected through botocore's events,
    # as tests/moto_server.py does for EC2's eventual consistency).
    client = moto.client("s3", Calls(not_yet={"GetObject": ("AccessDenied", 1), "ListObjectsV2": ("AccessDenied", 1)}))
    client.create_bucket(Bucket=BUCKET)
    s = S3Store(BUCKET, client=client)
    with pytest.raises(StoreError) as e:
        s.get("demo/pki/ca.key")
    assert not isinstance(e.value, StoreNotFound)
    assert "AccessDenied" in str(e.value) and "demo/pki/ca.key" in str(e.value)


def test_s3_missing_key_behind_403_is_not_found(moto: Moto) -> None:  # noqa: F811
    # Without an unconditioned s3:ListBucket, S3 answers 403 for a missing key; the
    # listing the role may make tells a missing key from a denied one.
    client = moto.client("s3", Calls(not_yet={"GetObject": ("AccessDenied", 1)}))
    client.create_bucket(Bucket=BUCKET)
    with pytest.raises(StoreNotFound):
        S3Store(BUCKET, "root", client=client).get("demo/etcd/bootstrapped")


def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_store(f"file://{tmp_path}"), FolderStore)
    s3 = open_store("s3://bucket-1/team/a")
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix, s3.url) == ("bucket-1", "team/a", "s3://bucket-1/team/a")
    gs = open_store("gs://bucket-1")
    assert isinstance(gs, GCSStore) and (gs.bucket_name, gs.prefix) == ("bucket-1", "")
    for bad in ("http://x/y", "s3://", "file://relative", "gs://b/../x"):
        with pytest.raises(StoreError):
            open_store(bad)


def test_upload_puts_only_what_changed_and_never_deletes(backend: Backend) -> None:
    s = backend.store
    s.put("demo/members/demo-master-0.json", b"{}")  # a node's own object: not the operator's to touch
    objects = {layout.description("demo"): b'{"digest": 1}', layout.pki("demo", "ca.crt"): b"crt",
               layout.pki("demo", "ca.key"): b"key"}
    first = upload(s, objects)
    assert sorted(first.written) == sorted(objects) and first.unchanged == []
    before = backend.calls()
    again = upload(s, objects)
    assert again.written == [] and sorted(again.unchanged) == sorted(objects)
    assert backend.calls() - before <= 1 + len(objects)  # one listing, one read per object, no write
    changed = upload(s, {**objects, layout.description("demo"): b'{"digest": 2}'})
    assert changed.written == [layout.description("demo")]
    assert s.get(layout.description("demo")) == b'{"digest": 2}'
    upload(s, {layout.description("demo"): b'{"digest": 3}'})  # fewer keys: the others stay
    assert s.list("demo/") == ["demo/cluster.json", "demo/members/demo-master-0.json", "demo/pki/ca.crt", "demo/pki/ca.key"]


def test_gcs_put_if_absent_whose_answer_was_lost_still_wins(gcs_server: FakeGCS) -> None:
    from tests.fake_gcs import Fault

    client = gcs_client(endpoint=gcs_server.url)
    client.create_bucket("lost-answers")
    s = GCSStore("lost-answers", client=client)
    gcs_server.faults.append(Fault("object.upload", status=503, lost=True))  # created, then the answer is lost
    assert s.put_if_absent("demo/etcd/bootstrap", b"demo-master-0") is True  # the retry's 412 is our own object
    assert s.put_if_absent("demo/etcd/bootstrap", b"demo-master-1") is False
    gcs_server.faults.append(Fault("object.upload", status=503))  # refused before anything was written
    assert s.put_if_absent("demo/etcd/other", b"x") is True
    gcs_server.faults.clear()


def test_s3_put_if_absent_retries_a_conditional_conflict(moto: Moto) -> None:  # noqa: F811
    # S3 answers 409 ConditionalRequestConflict while another conditional write to the key is in flight.
    calls = Calls(not_yet={"PutObject": ("ConditionalRequestConflict", 2)})
    client = moto.client("s3", calls)
    client.create_bucket(Bucket=BUCKET)
    s = S3Store(BUCKET, client=client)
    assert s.put_if_absent("demo/etcd/bootstrap", b"demo-master-0") is True
    assert [op for _, op, _ in calls.log].count("PutObject") == 3
