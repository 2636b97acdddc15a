"""The AWS side of the state store against moto's server: the bucket's settings and the
masters' role, read back from S3 and IAM; idempotence counted in calls."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bakery.errors import ProviderError
from bakery.providers.aws import bucket, iam
from bakery.providers.base import Ledger
from bakery.store import location
from bakery.store.s3 import S3Store
from tests.moto_server import Calls, Moto, make_spec, moto, moto_session  # noqa: F401


def ledger() -> Ledger:
    return Ledger(lambda *a: None)


def test_bucket_is_created_private_encrypted_versioned_and_tagged(moto: Moto) -> None:  # noqa: F811
    spec = make_spec()
    s3 = moto.client("s3")
    b = bucket.ensure(s3, spec, ledger())
    assert b.url == location.default_url(spec) and b.url.startswith("s3://demo-bakery-") and b.owned
    assert s3.get_public_access_block(Bucket=b.name)["PublicAccessBlockConfiguration"] == bucket.BLOCK_ALL
    rule = s3.get_bucket_encryption(Bucket=b.name)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_bucket_versioning(Bucket=b.name)["Status"] == "Enabled"
    assert {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=b.name)["TagSet"]}["bakery:cluster"] == "demo"


def test_second_ensure_writes_nothing(moto: Moto) -> None:  # noqa: F811
    spec = make_spec()
    bucket.ensure(moto.client("s3"), spec, ledger())
    calls = Calls()
    again = ledger()
    bucket.ensure(moto.client("s3", calls), spec, again)
    assert calls.mutating == [] and again.created == []
    assert len(calls.log) == 5  # head, tagging, public access block, encryption, versioning: reads only


def test_each_setting_is_repaired_alone(moto: Moto) -> None:  # noqa: F811
    spec = make_spec()
    s3 = moto.client("s3")
    b = bucket.ensure(s3, spec, ledger())
    s3.delete_public_access_block(Bucket=b.name)
    s3.put_bucket_versioning(Bucket=b.name, VersioningConfiguration={"Status": "Suspended"})
    calls = Calls()
    bucket.ensure(moto.client("s3", calls), spec, ledger())
    assert sorted(calls.mutating) == ["PutBucketVersioning", "PutPublicAccessBlock"]
    assert s3.get_bucket_versioning(Bucket=b.name)["Status"] == "Enabled"


def test_kms_key_and_region(moto: Moto) -> None:  # noqa: F811
    alias = "arn:aws:kms:eu-west-1:123456789012:alias/demo"
    spec = make_spec(extra=f"store: {{url: s3://demo-state-eu/team, kms_key_id: '{alias}'}}\n")
    spec = spec.model_copy(update={"aws": spec.aws.model_copy(update={"region": "eu-west-1"})})
    s3 = moto.client("s3")
    b = bucket.ensure(s3, spec, ledger())
    assert (b.name, b.prefix, b.owned) == ("demo-state-eu", "team", True)  # created by bakery: tagged
    assert s3.get_bucket_location(Bucket=b.name)["LocationConstraint"] == "eu-west-1"
    rule = s3.get_bucket_encryption(Bucket=b.name)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": alias}
    (key,) = [st for st in iam.policy_document(spec)["Statement"] if st["Sid"] == "StoreKey"]
    assert key["Condition"] == {"ForAnyValue:StringEquals": {"kms:ResourceAliases": ["alias/demo"]}}
    by_id = make_spec(extra="store: {kms_key_id: 1234abcd-12ab-34cd-56ef-1234567890ab}\n")
    (key,) = [st for st in iam.policy_document(by_id)["Statement"] if st["Sid"] == "StoreKey"]
    assert key["Resource"] == ["arn:aws:kms:us-east-1:*:key/1234abcd-12ab-34cd-56ef-1234567890ab"]


def test_a_users_bucket_is_used_not_tagged_and_never_deleted(moto: Moto) -> None:  # noqa: F811
    spec = make_spec(extra="store: {url: s3://users-bucket/bakery}\n")
    s3 = moto.client("s3")
    s3.create_bucket(Bucket="users-bucket")
    s3.put_object(Bucket="users-bucket", Key="their/data", Body=b"keep me")
    b = bucket.ensure(s3, spec, ledger())
    assert not b.owned
    store = S3Store(b.name, b.prefix, client=s3)
    store.put("demo/pki/ca.crt", b"x")
    store.put("demo/pki/ca.crt", b"y")  # two versions
    gone = ledger()
    bucket.purge(s3, spec, gone)
    assert s3.get_object(Bucket="users-bucket", Key="their/data")["Body"].read() == b"keep me"
    assert not s3.list_object_versions(Bucket="users-bucket", Prefix="bakery/").get("Versions")
    assert gone.deleted == ["2 object versions under s3://users-bucket/bakery/demo/"]


def test_purge_empties_every_version_and_deletes_bakerys_bucket(moto: Moto) -> None:  # noqa: F811
    spec = make_spec()
    s3 = moto.client("s3")
    b = bucket.ensure(s3, spec, ledger())
    store = S3Store(b.name, client=s3)
    for i in range(3):
        store.put("demo/cluster.json", f"v{i}".encode())
    store.delete("demo/cluster.json")  # a delete marker on a versioned bucket
    store.put("demo/pki/ca.key", b"k")
    gone = ledger()
    bucket.purge(s3, spec, gone)
    assert b.name not in [x["Name"] for x in s3.list_buckets()["Buckets"]]
    assert gone.deleted[-1] == f"bucket {b.name}"
    bucket.purge(s3, spec, ledger())  # nothing left: no error


def test_a_bucket_of_another_cluster_is_refused(moto: Moto) -> None:  # noqa: F811
    s3 = moto.client("s3")
    bucket.ensure(s3, make_spec(name="one", extra="store: {url: s3://shared-one}\n"), ledger())
    with pytest.raises(ProviderError, match="belongs to bakery cluster 'one'"):
        bucket.ensure(s3, make_spec(name="two", extra="store: {url: s3://shared-one}\n"), ledger())


def _policy(moto: Moto, role: str) -> dict[str, Any]:  # noqa: F811
    doc = moto.client("iam").get_role_policy(RoleName=role, PolicyName=iam.POLICY_NAME)["PolicyDocument"]
    return json.loads(doc) if isinstance(doc, str) else doc


def test_role_policy_is_limited_to_the_cluster_prefix(moto: Moto) -> None:  # noqa: F811
    spec = make_spec(extra="store: {url: s3://team-state/k8s}\n")
    ident = iam.ensure(moto.client("iam"), spec, ledger())
    assert ident.created_by_bakery and ident.instance_profile == "demo-bakery-master"
    c = moto.client("iam")
    role = c.get_role(RoleName="demo-bakery-master")["Role"]
    assert role["Path"] == "/bakery/" and {"Key": "bakery:cluster", "Value": "demo"} in role["Tags"]
    trust = role["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    profile = c.get_instance_profile(InstanceProfileName="demo-bakery-master")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["demo-bakery-master"]

    by_action: dict[str, list[dict[str, Any]]] = {}
    for st in _policy(moto, "demo-bakery-master")["Statement"]:
        assert st["Effect"] == "Allow"
        for action in st["Action"]:
            by_action.setdefault(action, []).append(st)
    assert sorted(by_action) == ["autoscaling:CompleteLifecycleAction", "ec2:DescribeInstances", "s3:DeleteObject",
                                 "s3:GetObject", "s3:ListBucket", "s3:PutObject"]
    s3_resources = [r for a, sts in by_action.items() if a.startswith("s3:") for st in sts for r in st["Resource"]]
    assert all(r == "arn:aws:s3:::team-state" or r.startswith("arn:aws:s3:::team-state/k8s/demo/") for r in s3_resources)
    assert [st["Resource"] for st in by_action["s3:GetObject"]] == [["arn:aws:s3:::team-state/k8s/demo/*"]]
    assert sorted(by_action["s3:PutObject"][0]["Resource"]) == [
        "arn:aws:s3:::team-state/k8s/demo/backups/*", "arn:aws:s3:::team-state/k8s/demo/etcd/*",
        "arn:aws:s3:::team-state/k8s/demo/members/*"]
    assert by_action["s3:DeleteObject"] == by_action["s3:PutObject"]
    assert by_action["s3:ListBucket"][0]["Condition"] == {"StringLike": {"s3:prefix": ["k8s/demo/*"]}}
    assert by_action["autoscaling:CompleteLifecycleAction"][0]["Condition"] == {
        "StringEquals": {"autoscaling:ResourceTag/bakery:cluster": "demo"}}


def test_role_is_found_before_created_and_removed_by_delete(moto: Moto) -> None:  # noqa: F811
    spec = make_spec()
    iam.ensure(moto.client("iam"), spec, ledger())
    calls = Calls()
    iam.ensure(moto.client("iam", calls), spec, ledger())
    assert calls.mutating == []
    other = make_spec(name="other")
    iam.ensure(moto.client("iam"), other, ledger())
    gone = ledger()
    iam.delete(moto.client("iam"), "demo", gone)
    assert gone.deleted == ["instance-profile demo-bakery-master", "iam-role demo-bakery-master"]
    names = [r["RoleName"] for r in moto.client("iam").list_roles()["Roles"]]
    assert "demo-bakery-master" not in names and "other-bakery-master" in names
    calls = Calls()
    iam.delete(moto.client("iam", calls), "demo", ledger())
    assert calls.mutating == []


def test_a_role_bakery_did_not_make_is_refused(moto: Moto) -> None:  # noqa: F811
    moto.client("iam").create_role(RoleName="demo-bakery-master", AssumeRolePolicyDocument=json.dumps(iam.TRUST))
    with pytest.raises(ProviderError, match="not bakery's"):
        iam.ensure(moto.client("iam"), make_spec(), ledger())
    gone = ledger()
    iam.delete(moto.client("iam"), "demo", gone)
    assert gone.deleted == []


def test_a_given_instance_profile_creates_nothing(moto: Moto) -> None:  # noqa: F811
    spec = make_spec(extra="").model_copy()
    spec = spec.model_copy(update={"aws": spec.aws.model_copy(update={"instance_profile": "their-profile"})})
    calls = Calls()
    ident = iam.ensure(moto.client("iam", calls), spec, ledger())
    assert ident == iam.Identity(None, "their-profile", created_by_bakery=False)
    assert calls.log == []
    assert iam.policy_document(spec)["Statement"][0]["Resource"] == [f"arn:aws:s3:::{location.split(location.store_url(spec))[1]}/demo/*"]


def test_up_attaches_the_profile_and_down_keeps_the_bucket_unless_purge(moto: Moto, tmp_path: Any) -> None:  # noqa: F811
    from bakery import state
    from bakery.providers.aws import create
    from tests.moto_server import fixed_render, record_ami

    spec = make_spec()
    paths = state.paths(spec.name, tmp_path / "build")
    paths.base.mkdir(parents=True)
    record_ami(paths, moto.register_ami())

    def provider() -> Any:
        return create(spec, paths, lambda *a: None, client_factory=moto.factory(), poll_interval=0.05, wait_timeout=10)

    provider().up(fixed_render(spec))
    ec2, s3 = moto.client("ec2"), moto.client("s3")
    url = state.load(paths)["store"]["url"]
    name = location.split(url)[1]
    assert url == location.default_url(spec) and state.load(paths)["store"]["owned"] is True
    found = [i for r in ec2.describe_instances(Filters=[{"Name": "tag:bakery:cluster", "Values": ["demo"]}])["Reservations"]
             for i in r["Instances"]]
    assert len(found) == 3
    assert all(i["IamInstanceProfile"]["Arn"].endswith("instance-profile/bakery/demo-bakery-master") for i in found)

    kept = S3Store(name, client=s3)
    for key in ("demo/members/demo-master-0.json", "demo/etcd/bootstrapped", "demo/backups/b1.db", "demo/pki/ca.crt"):
        kept.put(key, b"{}")
    deleted = provider().down()
    assert "iam-role demo-bakery-master" in deleted and not any(d.startswith("bucket") for d in deleted)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    # the masters' disks went with them: what said their etcd runs goes too, the rest stays
    assert f"etcd records etcd/bootstrapped, members/demo-master-0.json in s3://{name}" in deleted
    assert kept.list("demo/") == ["demo/backups/b1.db", "demo/pki/ca.crt"]

    deleted = provider().down(purge=True)
    assert f"bucket {name}" in deleted
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert "store" not in state.load(paths)


def test_cli_prints_the_policy_a_given_profile_needs_and_purges(moto: Moto, tmp_path: Any, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from bakery import cli, state
    from tests.moto_server import SPEC, record_ami

    for var, value in (("BAKERY_AWS_ENDPOINT_URL", moto.endpoint), ("AWS_ACCESS_KEY_ID", "testing"),
                       ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none")),
                       ("AWS_CONFIG_FILE", str(tmp_path / "none"))):
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(SPEC.format(name="demo", masters=3) + "  instance_profile: ops-masters\n")
    paths = state.paths("demo", tmp_path / "build")
    paths.base.mkdir(parents=True)
    record_ami(paths, moto.register_ami())
    args = ["-f", str(spec_file), "-o", str(tmp_path / "build")]
    moto.client("iam").create_instance_profile(InstanceProfileName="ops-masters")  # the user's own

    assert cli.main(["up", *args]) == 0
    printed = capsys.readouterr()
    assert "aws.instance_profile ops-masters is used as given" in printed.err
    policy = json.loads(printed.out[printed.out.index("{"):])
    assert policy == iam.policy_document(make_spec(extra="  instance_profile: ops-masters\n"))
    assert moto.client("iam").list_roles(PathPrefix="/bakery/")["Roles"] == []
    name = location.split(state.load(paths)["store"]["url"])[1]

    assert cli.main(["down", *args]) == 0
    assert name in [b["Name"] for b in moto.client("s3").list_buckets()["Buckets"]]
    assert cli.main(["down", *args, "--purge"]) == 0
    assert f"deleted bucket {name}" in capsys.readouterr().out
    assert name not in [b["Name"] for b in moto.client("s3").list_buckets()["Buckets"]]


def test_someone_elses_bucket_name_is_one_clear_line(moto: Moto) -> None:  # noqa: F811
    # What S3 answers HeadBucket for a bucket of another account (injected: moto has one account).
    s3 = moto.client("s3", Calls(not_yet={"HeadBucket": ("403", 1)}))
    with pytest.raises(ProviderError, match=r"may not use it .*set store.url"):
        bucket.ensure(s3, make_spec(), ledger())
