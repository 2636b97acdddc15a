"""tests/fake_gcs.py answers as Cloud Storage and IAM document (status codes, reasons),
checked through the real google-cloud-storage client and plain HTTP."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from google.api_core import exceptions as ex

from bakery.store.gcs import default_client, reason
from tests.fake_gcs import FakeGCS, valid_bucket_name


@pytest.fixture
def fake() -> Iterator[FakeGCS]:
    with FakeGCS().running() as f:
        yield f


def call(fake: FakeGCS, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(fake.url + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_bucket_names_follow_gcs_rules() -> None:
    for good in ("abc", "my-bucket_1", "a" * 63, "a.b.c"):
        assert valid_bucket_name(good), good
    for bad in ("ab", "a" * 64, "Upper", "-start", "end-", "192.168.1.1", "goog-x", "my-google-bucket", "a b"):
        assert not valid_bucket_name(bad), bad


def test_bucket_errors(fake: FakeGCS) -> None:
    c = default_client(endpoint=fake.url)
    with pytest.raises(ex.BadRequest) as e:
        c.create_bucket("Bad_Name")
    assert reason(e.value) == "invalid"
    c.create_bucket("good-name")
    with pytest.raises(ex.Conflict) as e:
        c.create_bucket("good-name")
    assert reason(e.value) == "conflict" and "already own" in e.value.message
    with pytest.raises(ex.NotFound) as e:
        c.get_bucket("missing-name")
    assert reason(e.value) == "notFound"
    fake.foreign.add("theirs")
    with pytest.raises(ex.Forbidden):
        c.get_bucket("theirs")
    with pytest.raises(ex.Conflict) as e:
        c.create_bucket("theirs")
    assert "not available" in e.value.message
    status, body = call(fake, "POST", "/storage/v1/b", {"name": "no-project"})
    assert (status, body["error"]["errors"][0]["reason"]) == (400, "required")


def test_delete_refuses_a_bucket_with_noncurrent_versions(fake: FakeGCS) -> None:
    c = default_client(endpoint=fake.url)
    b = c.bucket("versioned")
    b.versioning_enabled = True
    b = c.create_bucket(b)
    blob = b.blob("k")
    blob.upload_from_string(b"1")
    b.delete_blob("k")  # no generation: the live version becomes noncurrent, still in the bucket
    assert fake.live("versioned") == {} and fake.versions("versioned") == 1
    with pytest.raises(ex.Conflict) as e:
        b.delete()
    assert "not empty" in e.value.message
    (old,) = list(c.list_blobs("versioned", versions=True))
    b.delete_blob("k", generation=old.generation)
    b.delete()
    assert "versioned" not in fake.buckets


def test_preconditions_and_not_found(fake: FakeGCS) -> None:
    c = default_client(endpoint=fake.url)
    b = c.create_bucket("pre")
    b.blob("k").upload_from_string(b"1", if_generation_match=0)
    with pytest.raises(ex.PreconditionFailed) as e:
        b.blob("k").upload_from_string(b"2", if_generation_match=0, retry=None)
    assert reason(e.value) == "conditionNotMet"
    gen = b.get_blob("k").generation
    b.blob("k").upload_from_string(b"3", if_generation_match=gen)
    assert b.blob("k").download_as_bytes() == b"3"
    with pytest.raises(ex.NotFound):
        b.blob("nope").download_as_bytes()
    with pytest.raises(ex.NotFound):
        b.blob("nope").delete()


def test_iam_policy_rules(fake: FakeGCS) -> None:
    c = default_client(endpoint=fake.url)
    b = c.create_bucket("policy")
    policy = b.get_iam_policy(requested_policy_version=3)
    policy.version = 3
    policy.bindings.append({"role": "roles/storage.objectViewer", "members": {"user:a@example.com"},
                            "condition": {"title": "t", "expression": "true"}})
    with pytest.raises(ex.BadRequest, match="uniform bucket-level access"):
        b.set_iam_policy(policy)
    b.iam_configuration.uniform_bucket_level_access_enabled = True
    b.iam_configuration.public_access_prevention = "enforced"
    b.patch()
    b.set_iam_policy(policy)
    with pytest.raises(ex.BadRequest):  # conditions exist: version 1 cannot show them
        b.get_iam_policy(requested_policy_version=1)
    policy = b.get_iam_policy(requested_policy_version=3)
    policy.bindings.append({"role": "roles/storage.objectViewer", "members": {"allUsers"}})
    with pytest.raises(ex.PreconditionFailed, match="public access prevention"):
        b.set_iam_policy(policy)
    policy = b.get_iam_policy(requested_policy_version=3)
    stale = b.get_iam_policy(requested_policy_version=3)
    policy.bindings.append({"role": "roles/storage.objectViewer", "members": {"user:b@example.com"}})
    b.set_iam_policy(policy)
    stale.bindings.append({"role": "roles/storage.objectViewer", "members": {"user:c@example.com"}})
    with pytest.raises(ex.PreconditionFailed):  # etag of an older policy
        b.set_iam_policy(stale)
    policy = b.get_iam_policy(requested_policy_version=3)
    policy.bindings.append({"role": "roles/storage.objectViewer", "members": {f"serviceAccount:ghost@{fake.project}.iam.gserviceaccount.com"}})
    with pytest.raises(ex.BadRequest, match="does not exist"):
        b.set_iam_policy(policy)
    policy.bindings[-1] = {"role": "roles/owner", "members": {"user:d@example.com"}}
    with pytest.raises(ex.BadRequest, match="not supported"):
        b.set_iam_policy(policy)


def test_service_accounts(fake: FakeGCS) -> None:
    base = f"/v1/projects/{fake.project}/serviceAccounts"
    assert call(fake, "POST", base, {"accountId": "short"})[1]["error"]["status"] == "INVALID_ARGUMENT"
    assert call(fake, "POST", base, {"accountId": "Under_score"})[0] == 400
    status, sa = call(fake, "POST", base, {"accountId": "masters-1", "serviceAccount": {"description": "d"}})
    assert status == 200 and sa["email"] == f"masters-1@{fake.project}.iam.gserviceaccount.com"
    status, body = call(fake, "POST", base, {"accountId": "masters-1"})
    assert (status, body["error"]["status"]) == (409, "ALREADY_EXISTS")
    assert call(fake, "GET", f"{base}/{sa['email']}")[1]["uniqueId"] == sa["uniqueId"]
    c = default_client(endpoint=fake.url)
    b = c.bucket("with-sa")
    b = c.create_bucket(b)
    policy = b.get_iam_policy()
    policy.bindings.append({"role": "roles/storage.objectViewer", "members": {f"serviceAccount:{sa['email']}"}})
    b.set_iam_policy(policy)
    assert call(fake, "DELETE", f"{base}/{sa['email']}")[0] == 200
    assert call(fake, "GET", f"{base}/{sa['email']}")[0] == 404
    assert call(fake, "DELETE", f"{base}/{sa['email']}")[1]["error"]["status"] == "NOT_FOUND"
    members = [m for x in fake.policies["with-sa"]["bindings"] for m in x["members"]]
    assert f"deleted:serviceAccount:{sa['email']}?uid={sa['uniqueId']}" in members


def test_list_pages_with_prefix_and_delimiter(fake: FakeGCS) -> None:
    c = default_client(endpoint=fake.url)
    b = c.create_bucket("listing")
    for name in ("a/1", "a/2", "a/b/3", "c"):
        b.blob(name).upload_from_string(b"")
    it = c.list_blobs("listing", prefix="a/", delimiter="/", page_size=1)
    names = [x.name for x in it]
    assert names == ["a/1", "a/2"] and it.prefixes == {"a/b/"}
    assert call(fake, "GET", "/storage/v1/b/listing/o?maxResults=0")[0] == 400
