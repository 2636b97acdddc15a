"""The masters' IAM role and instance profile: least privilege on the cluster's store.

The role `<cluster>-bakery-master` (path /bakery/, tagged `bakery:cluster`) may be
assumed by EC2 and has one inline policy, derived from bakery.store.layout:

    s3:GetObject                  <bucket>/<prefix>/<cluster>/*     read the description, CA material
    s3:PutObject, s3:DeleteObject <bucket>/<prefix>/<cluster>/{members,etcd,backups}/*   and only there
    s3:ListBucket                 <bucket>, when s3:prefix is under <prefix>/<cluster>/
    ec2:DescribeInstances         *  (takes no resource-level permissions): is a dead member's machine gone?
    autoscaling:CompleteLifecycleAction   the cluster's group (aws.masters: asg; else groups tagged
                                          bakery:cluster=<cluster>): `bakery-node leave` ends its hook
    kms:Decrypt, kms:GenerateDataKey      the store's KMS key, only with store.kms_key_id

Every piece is found before it is created (a second `up` writes nothing) and `down`
removes exactly the role and profile carrying the cluster's tag. With
`aws.instance_profile` bakery creates none of this; `bakery up` prints the policy that
profile needs (`policy_document`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from bakery.errors import ProviderError
from bakery.providers.aws import bucket as bucket_mod
from bakery.providers.aws.common import TAG_CLUSTER, tags
from bakery.providers.base import Ledger
from bakery.spec import ClusterSpec
from bakery.store import layout

PATH = "/bakery/"
POLICY_NAME = "bakery-store"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def role_name(cluster: str) -> str:
    return f"{cluster}-bakery-master"  # at most 32 + 14 characters (IAM allows 64)


@dataclass(frozen=True)
class Identity:
    role: str | None
    instance_profile: str  # what the masters are started with
    created_by_bakery: bool


def policy_document(spec: ClusterSpec) -> dict[str, Any]:
    """The permissions a master needs on the cluster's store, and nothing else."""
    b = bucket_mod.of(spec)
    mine = bucket_mod.cluster_prefix(b, spec.name)
    root = f"{b.prefix}/" if b.prefix else ""
    writable = [f"arn:aws:s3:::{b.name}/{root}{p}*" for p in layout.node_writable_prefixes(spec.name)]
    statements: list[dict[str, Any]] = [
        {"Sid": "ReadCluster", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"arn:aws:s3:::{b.name}/{mine}*"]},
        {"Sid": "WriteNodePrefixes", "Effect": "Allow", "Action": ["s3:PutObject", "s3:DeleteObject"], "Resource": writable},
        {"Sid": "ListCluster", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [f"arn:aws:s3:::{b.name}"],
         "Condition": {"StringLike": {"s3:prefix": [f"{mine}*"]}}},
        # bakery-node removes the etcd member of an instance EC2 no longer runs.
        {"Sid": "FindMembers", "Effect": "Allow", "Action": ["ec2:DescribeInstances"], "Resource": ["*"]},
        # A master leaving its autoscaling group on purpose (`bakery-node leave`) completes
        # the group's termination hook once its etcd member is gone. With aws.masters: asg
        # only bakery's group; else (a group of the user's, from `bakery launch-template`)
        # any group tagged with this cluster.
        {"Sid": "LeaveGroup", "Effect": "Allow", "Action": ["autoscaling:CompleteLifecycleAction"],
         "Resource": [_group_arn(spec)], "Condition": {"StringEquals": {f"autoscaling:ResourceTag/{TAG_CLUSTER}": spec.name}}},
    ]
    if spec.store.kms_key_id:
        statements.append(_kms_statement(spec.store.kms_key_id, spec.provider_spec.region))  # type: ignore[union-attr]
    return {"Version": "2012-10-17", "Statement": statements}


def _group_arn(spec: ClusterSpec) -> str:
    """Auto Scaling groups take resource-level permissions by ARN; the account is left open
    (bakery does not know it before the first call)."""
    from bakery.providers.aws import group

    aws = spec.provider_spec
    if aws.masters != "asg":  # type: ignore[union-attr]
        return "*"
    return f"arn:aws:autoscaling:{aws.region}:*:autoScalingGroup:*:autoScalingGroupName/{group.name(spec.name)}"  # type: ignore[union-attr]


def _kms_statement(key: str, region: str) -> dict[str, Any]:
    """Use of the store's KMS key. A policy's Resource must be the key's ARN; an alias is
    matched with the kms:ResourceAliases condition instead.
    https://docs.aws.amazon.com/kms/latest/developerguide/alias-authorization.html"""
    statement: dict[str, Any] = {"Sid": "StoreKey", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"]}
    if ":alias/" in key:
        statement["Resource"] = ["*"]
        statement["Condition"] = {"ForAnyValue:StringEquals": {"kms:ResourceAliases": [f"alias/{key.split(':alias/', 1)[1]}"]}}
    else:
        statement["Resource"] = [key if key.startswith("arn:") else f"arn:aws:kms:{region}:*:key/{key}"]
    return statement


def _code(e: Any) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


def _document(value: Any) -> Any:
    """A policy document as IAM returns it (boto3 decodes it to a dict; some paths give URL-encoded JSON)."""
    return json.loads(unquote(value)) if isinstance(value, str) else value


def _tag_dict(items: list[dict[str, str]]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items}


def ensure(iam: Any, spec: ClusterSpec, ledger: Ledger) -> Identity:
    """The role, its inline policy and the instance profile; or the spec's own profile, untouched.
    `up` runs the same pieces as separate steps (role -> policy; profile; attach) in parallel."""
    if spec.provider_spec.instance_profile:  # type: ignore[union-attr]
        return attach(iam, spec, None, ledger)
    ensure_role(iam, spec, ledger)
    ensure_policy(iam, spec, ledger)
    return attach(iam, spec, ensure_profile(iam, spec, ledger), ledger)


def ensure_role(iam: Any, spec: ClusterSpec, ledger: Ledger) -> str | None:
    """The masters' role (None with aws.instance_profile): found by name, its tag checked."""
    if spec.provider_spec.instance_profile:  # type: ignore[union-attr]
        return None
    from botocore.exceptions import ClientError

    name, cluster = role_name(spec.name), spec.name
    try:
        role = iam.get_role(RoleName=name)["Role"]
        owner = _tag_dict(role.get("Tags", [])).get(TAG_CLUSTER)
        if owner != cluster:
            raise ProviderError(f"IAM role {name} exists but is not bakery's for {cluster} (tag {TAG_CLUSTER}={owner}): "
                                "remove it or set aws.instance_profile")
        ledger.found("iam-role", name)
    except ClientError as e:
        if _code(e) != "NoSuchEntity":
            raise
        try:
            iam.create_role(RoleName=name, Path=PATH, AssumeRolePolicyDocument=json.dumps(TRUST),
                            Description=f"bakery: masters of {cluster} (state store access)",
                            Tags=tags(cluster, "iam-role", name))
            ledger.made("iam-role", name)
        except ClientError as e2:
            if _code(e2) != "EntityAlreadyExists":
                raise
            ledger.found("iam-role", name)
    return name


def ensure_policy(iam: Any, spec: ClusterSpec, ledger: Ledger) -> None:
    """The role's inline policy, written only when it differs from policy_document(spec)."""
    if spec.provider_spec.instance_profile:  # type: ignore[union-attr]
        return
    from botocore.exceptions import ClientError

    name = role_name(spec.name)
    want = policy_document(spec)
    try:
        have = _document(iam.get_role_policy(RoleName=name, PolicyName=POLICY_NAME)["PolicyDocument"])
    except ClientError as e:
        if _code(e) != "NoSuchEntity":
            raise
        have = None
    if have != want:
        iam.put_role_policy(RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(want))
        ledger.made("iam-policy", f"{name}/{POLICY_NAME}")


def ensure_profile(iam: Any, spec: ClusterSpec, ledger: Ledger) -> dict[str, Any] | None:
    """The instance profile (None with aws.instance_profile); it needs no role to exist."""
    if spec.provider_spec.instance_profile:  # type: ignore[union-attr]
        return None
    from botocore.exceptions import ClientError

    name = role_name(spec.name)
    try:
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        ledger.found("instance-profile", name)
    except ClientError as e:
        if _code(e) != "NoSuchEntity":
            raise
        try:
            profile = iam.create_instance_profile(InstanceProfileName=name, Path=PATH,
                                                  Tags=tags(spec.name, "instance-profile", name))["InstanceProfile"]
            ledger.made("instance-profile", name)
        except ClientError as e2:
            if _code(e2) != "EntityAlreadyExists":
                raise
            profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    return dict(profile)


def attach(iam: Any, spec: ClusterSpec, profile: dict[str, Any] | None, ledger: Ledger) -> Identity:
    """The role in its profile (after ensure_role and ensure_profile); what masters start with."""
    given = spec.provider_spec.instance_profile  # type: ignore[union-attr]
    if given:
        return Identity(None, given, created_by_bakery=False)
    assert profile is not None
    name = role_name(spec.name)
    roles = [r["RoleName"] for r in profile.get("Roles", [])]
    if roles and roles != [name]:
        raise ProviderError(f"instance profile {name} holds role {roles[0]}, not {name}: remove it, then rerun `bakery up`")
    if not roles:
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        ledger.made("instance-profile role", name)
    return Identity(name, name, created_by_bakery=True)


def delete(iam: Any, cluster: str, ledger: Ledger) -> None:
    """Remove the profile and the role, when they carry the cluster's tag."""
    from botocore.exceptions import ClientError

    name = role_name(cluster)
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except ClientError as e:
        if _code(e) != "NoSuchEntity":
            raise
        role = None
    try:
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except ClientError as e:
        if _code(e) != "NoSuchEntity":
            raise
        profile = None
    role_ours = role is not None and _tag_dict(role.get("Tags", [])).get(TAG_CLUSTER) == cluster
    # GetInstanceProfile returns the profile's tags
    if profile is not None and _tag_dict(profile.get("Tags", [])).get(TAG_CLUSTER) == cluster:
        for r in profile.get("Roles", []):
            iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=r["RoleName"])
        iam.delete_instance_profile(InstanceProfileName=name)
        ledger.gone("instance-profile", name)
    if role_ours:
        for policy in iam.list_role_policies(RoleName=name).get("PolicyNames", []):
            iam.delete_role_policy(RoleName=name, PolicyName=policy)
        for attached in iam.list_attached_role_policies(RoleName=name).get("AttachedPolicies", []):
            iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
        iam.delete_role(RoleName=name)
        ledger.gone("iam-role", name)
