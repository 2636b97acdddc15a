"""Certificates: issued once, reused, re-issued (with the same key, and said so) only when
the plan's names change; keys 0600 and refused when looser."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from bakery import pki, spec, topology
from bakery.errors import PKIError

SPEC = "name: demo\nprovider: aws\naws: {region: us-east-1}\n"


def plan(extra: str = "", **lb):
    return topology.plan(spec.parse(SPEC + extra), **lb)


def cert(folder: Path, rel: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((folder / f"{rel}.crt").read_bytes())


def test_first_run_issues_everything_second_run_nothing(tmp_path: Path):
    first = pki.ensure(plan(), tmp_path)
    assert "issued ca.crt" in first.changes and "issued apiserver.crt" in first.changes
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    second = pki.ensure(plan(), tmp_path)
    assert second.changes == []
    assert before == {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}


def test_load_balancer_name_change_reissues_only_the_apiserver_cert_with_its_key(tmp_path: Path):
    pki.ensure(plan(), tmp_path)
    ca_before = (tmp_path / "ca.crt").read_bytes()
    key_before = (tmp_path / "apiserver.key").read_bytes()
    result = pki.ensure(plan(lb_dns_names=("nlb-123.elb.amazonaws.com",)), tmp_path)
    assert result.changes == ["re-issued apiserver.crt (SANs added: nlb-123.elb.amazonaws.com); its key is unchanged"]
    assert (tmp_path / "ca.crt").read_bytes() == ca_before
    assert (tmp_path / "apiserver.key").read_bytes() == key_before
    assert "nlb-123.elb.amazonaws.com" in pki.sans(cert(tmp_path, "apiserver"))[0]


def test_client_identities(tmp_path: Path):
    p = plan()
    pki.ensure(p, tmp_path)
    node = p.nodes[0].name
    kubelet = cert(tmp_path, f"nodes/{node}/kubelet").subject.rfc4514_string()
    assert kubelet == f"CN=system:node:{node},O=system:nodes"
    assert cert(tmp_path, "admin").subject.rfc4514_string() == "CN=kubernetes-admin,O=bakery:cluster-admins"
    assert cert(tmp_path, "apiserver-kubelet-client").subject.rfc4514_string() == \
        "CN=kube-apiserver-kubelet-client,O=bakery:apiserver-kubelet-clients"
    masters = [rel for rel in (p.relative_to(tmp_path).with_suffix("").as_posix() for p in tmp_path.rglob("*.crt"))
               if "system:masters" in cert(tmp_path, rel).subject.rfc4514_string()]
    assert masters == ["super-admin"]  # break glass only; no component certificate
    assert cert(tmp_path, "front-proxy-client").issuer == cert(tmp_path, "front-proxy-ca").subject
    assert cert(tmp_path, "apiserver-etcd-client").issuer == cert(tmp_path, "etcd/ca").subject


def test_ecdsa_by_default_rsa_on_request(tmp_path: Path):
    assert isinstance(pki.ensure(plan(), tmp_path / "a").path("ca.crt") and cert(tmp_path / "a", "ca").public_key(), ec.EllipticCurvePublicKey)
    pki.ensure(plan("key_algorithm: rsa-2048\n"), tmp_path / "b")
    assert isinstance(cert(tmp_path / "b", "apiserver").public_key(), rsa.RSAPublicKey)


def test_loose_key_permissions_are_refused_not_used(tmp_path: Path):
    pki.ensure(plan(), tmp_path)
    (tmp_path / "ca.key").chmod(0o644)
    with pytest.raises(PKIError) as e:
        pki.ensure(plan(), tmp_path)
    assert "ca.key" in str(e.value) and "0644" in str(e.value) and "chmod 600" in str(e.value)
    assert "PRIVATE" not in str(e.value)


def test_garbage_key_is_reported_without_its_content(tmp_path: Path):
    pki.ensure(plan(), tmp_path)
    (tmp_path / "ca.key").write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n")
    with pytest.raises(PKIError) as e:
        pki.ensure(plan(), tmp_path)
    assert str(e.value).startswith(f"{tmp_path / 'ca.key'}: changed since bakery wrote it")
    assert "c2VjcmV0" not in str(e.value) and "PRIVATE" not in str(e.value)
    assert e.value.__cause__ is None and (e.value.__context__ is None or e.value.__suppress_context__)


def test_seeded_pki_is_deterministic_and_ecdsa_only(tmp_path: Path):
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    pki.ensure(plan(), tmp_path / "a", seed=b"s", now=now)
    pki.ensure(plan(), tmp_path / "b", seed=b"s", now=now)
    for p in (tmp_path / "a").rglob("*.crt"):
        assert p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes()
    with pytest.raises(PKIError, match="ecdsa-p256 only"):
        pki.ensure(plan("key_algorithm: rsa-2048\n"), tmp_path / "c", seed=b"s")


# -- the PKI as one verified unit (issue 13) ---------------------------------------------


def reseal(folder: Path) -> None:
    """Rewrite manifest.json to match the files as they are now: what a careless copy or
    a buggy tool might leave, so only the cryptographic checks can catch what is wrong."""
    import hashlib
    import json

    m = json.loads((folder / "manifest.json").read_text())
    digest = lambda rel: "sha256:" + hashlib.sha256((folder / rel).read_bytes()).hexdigest()  # noqa: E731
    m["files"] = {rel: digest(rel) for rel in m["files"]}
    for info in m["leaves"].values():
        info["ca_sha256"] = digest(f"{info['ca']}.crt")
    (folder / "manifest.json").write_text(json.dumps(m))


def test_missing_ca_is_an_error_never_a_new_ca(tmp_path: Path):
    pki.ensure(plan(), tmp_path)
    leaf = (tmp_path / "apiserver.crt").read_bytes()
    (tmp_path / "ca.crt").unlink()
    (tmp_path / "ca.key").unlink()
    with pytest.raises(PKIError, match=r"ca.crt: missing \(the manifest lists it\)") as e:
        pki.ensure(plan(), tmp_path)
    assert "move it aside" in str(e.value)
    assert not (tmp_path / "ca.crt").exists() and (tmp_path / "apiserver.crt").read_bytes() == leaf


def test_a_folder_without_manifest_is_not_a_pki(tmp_path: Path):
    pki.ensure(plan(), tmp_path)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(PKIError, match=r"no manifest\.json, so not a complete bakery PKI"):
        pki.ensure(plan(), tmp_path)


def test_a_leaf_another_ca_signed_is_refused_even_with_a_matching_manifest(tmp_path: Path):
    pki.ensure(plan(), tmp_path / "a")
    pki.ensure(plan(), tmp_path / "b")
    for name in ("ca.crt", "ca.key"):
        (tmp_path / "a" / name).write_bytes((tmp_path / "b" / name).read_bytes())
    reseal(tmp_path / "a")
    with pytest.raises(PKIError) as e:
        pki.ensure(plan(), tmp_path / "a")
    assert "not signed by" in str(e.value) and str(tmp_path / "a") in str(e.value)


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path: Path):
    pki.ensure(plan(), tmp_path)
    (tmp_path / "admin.key").write_bytes((tmp_path / "kube-scheduler.key").read_bytes())
    reseal(tmp_path)
    with pytest.raises(PKIError, match=r"admin.key: not the key of .*admin.crt"):
        pki.ensure(plan(), tmp_path)


def test_validity_one_year_leaves_ten_year_cas(tmp_path: Path):
    now = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    pki.ensure(plan(), tmp_path, now=now)
    for rel, days in (("ca", 3650), ("etcd/ca", 3650), ("front-proxy-ca", 3650), ("apiserver", 365), ("admin", 365)):
        c = cert(tmp_path, rel)
        assert c.not_valid_after_utc - now == dt.timedelta(days=days), rel
    assert cert(tmp_path, "front-proxy-ca").subject.rfc4514_string() == "CN=front-proxy-ca"
    fp = cert(tmp_path, "front-proxy-client")
    assert fp.subject.rfc4514_string() == "CN=front-proxy-client"
    assert list(fp.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    fp.verify_directly_issued_by(cert(tmp_path, "front-proxy-ca"))


def test_masters_get_front_proxy_encryption_config_and_the_rbac_addon(tmp_path: Path):
    import base64

    import yaml

    p = plan()
    keys = pki.ensure(p, tmp_path)
    files = {path: (content, mode) for path, content, mode in keys.node_files(p.nodes[0])}
    for path, mode in (("/etc/kubernetes/pki/front-proxy-ca.crt", 0o644), ("/etc/kubernetes/pki/front-proxy-client.crt", 0o644),
                       ("/etc/kubernetes/pki/front-proxy-client.key", 0o600), ("/etc/kubernetes/pki/encryption-config.yaml", 0o600),
                       ("/etc/kubernetes/super-admin.conf", 0o600)):
        assert files[path][1] == mode, path
    cfg = yaml.safe_load(files["/etc/kubernetes/pki/encryption-config.yaml"][0])
    assert cfg["apiVersion"] == "apiserver.config.k8s.io/v1" and cfg["kind"] == "EncryptionConfiguration"
    (res,) = cfg["resources"]
    assert res["resources"] == ["secrets"]
    (key,) = res["providers"][0]["secretbox"]["keys"]
    assert key["name"] == "key1" and len(base64.b64decode(key["secret"])) == 32
    assert res["providers"][1] == {"identity": {}}
    assert base64.b64decode((tmp_path / "encryption.key").read_bytes()) == base64.b64decode(key["secret"])
    assert (tmp_path / "encryption.key").stat().st_mode & 0o777 == 0o600
    bindings = {d["metadata"]["name"]: d for d in yaml.safe_load_all(files["/etc/kubernetes/addons/bakery-rbac.yaml"][0])}
    admin = bindings["bakery:cluster-admins"]
    assert admin["kind"] == "ClusterRoleBinding" and admin["roleRef"]["name"] == "cluster-admin"
    assert admin["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "bakery:cluster-admins"}]
    kubelet = bindings["bakery:apiserver-kubelet-clients"]
    assert kubelet["roleRef"]["name"] == "system:kubelet-api-admin"
    assert kubelet["subjects"][0]["name"] == cert(tmp_path, "apiserver-kubelet-client").subject.get_attributes_for_oid(
        x509.oid.NameOID.ORGANIZATION_NAME)[0].value
    super_admin = yaml.safe_load(files["/etc/kubernetes/super-admin.conf"][0])
    crt = x509.load_pem_x509_certificate(base64.b64decode(super_admin["users"][0]["user"]["client-certificate-data"]))
    assert "O=system:masters" in crt.subject.rfc4514_string()
    assert "admin.kubeconfig" not in files and not any("system:masters" in p for p in files)


def test_a_node_issues_its_own_leaves_from_loaded_ca_material(tmp_path: Path):
    """The split issue 14 builds on: CA material loaded, leaves of one node issued with keys made elsewhere."""
    p = plan()
    pki.ensure(p, tmp_path)
    cas = pki.load(p, tmp_path).cas
    made: list[str] = []

    def key_for(leaf: pki.Leaf) -> ec.EllipticCurvePrivateKey:
        made.append(leaf.path)
        return ec.generate_private_key(ec.SECP256R1())

    node = p.nodes[1]
    issued = pki.issue_node_leaves(p, node, cas, key_for=key_for)
    assert {i.leaf.path for i in issued} == set(made) >= {"apiserver", f"nodes/{node.name}/etcd-peer", "front-proxy-client"}
    for i in issued:
        i.cert.verify_directly_issued_by(cas.certs[i.leaf.ca])
        assert i.cert.public_key() == i.key.public_key()
    # a master's own admin.conf (kubeadm's), in the revocable group, never system:masters
    admin = next(i for i in issued if i.leaf.path == "admin")
    assert admin.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == pki.ADMIN_GROUP


def test_a_renamed_load_balancer_reissues_in_a_new_unit_and_keeps_the_old_on_failure(tmp_path: Path):
    pki.ensure(plan(), tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    changed = pki.ensure(plan(lb_dns_names=("nlb-9.elb.amazonaws.com",)), tmp_path, write=False)
    assert changed.changes and before == {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}, "write=False wrote"
    pki.save(changed)
    assert pki.load(plan(lb_dns_names=("nlb-9.elb.amazonaws.com",)), tmp_path).read("apiserver.crt") == changed.read("apiserver.crt")
    assert sorted(p.name for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}.")) == []


def test_an_older_bakerys_pki_is_adopted_only_when_every_signature_holds(tmp_path: Path):
    """An older bakery left no manifest (and no front-proxy CA or encryption secret)."""
    import json

    p = plan()
    pki.ensure(p, tmp_path / "old")
    for rel in ("manifest.json", "front-proxy-ca.crt", "front-proxy-ca.key", "front-proxy-client.crt",
                "front-proxy-client.key", "encryption.key"):
        (tmp_path / "old" / rel).unlink()
    shutil.copytree(tmp_path / "old", tmp_path / "partial")
    ca = (tmp_path / "old" / "ca.crt").read_bytes()
    adopted = pki.adopt(p, tmp_path / "old")
    assert adopted.changes and (tmp_path / "old" / "ca.crt").read_bytes() == ca
    again = pki.ensure(p, tmp_path / "old")
    assert again.changes == ["issued front-proxy-client.crt"]
    assert set(json.loads((tmp_path / "old" / "manifest.json").read_text())["leaves"]) == {leaf.path for leaf in pki.leaves(p)}
    # what the issue saw: ca.* lost, a new CA made, the old leaves kept
    for rel in ("ca.crt", "ca.key"):
        (tmp_path / "partial" / rel).write_bytes((tmp_path / "old" / "etcd" / "ca.crt" if rel == "ca.crt" else tmp_path / "old" / "etcd" / "ca.key").read_bytes())
    with pytest.raises(PKIError, match=r"not signed by .*ca\.crt; this folder is not a complete PKI"):
        pki.adopt(p, tmp_path / "partial")
    assert not (tmp_path / "partial" / "manifest.json").exists()
    with pytest.raises(PKIError, match=r"already has a manifest\.json"):
        pki.adopt(p, tmp_path / "old")


def test_a_pki_changed_by_another_run_meanwhile_is_not_overwritten(tmp_path: Path):
    """Two renders at once: the one that saves second must not swap in its own CAs or leaves."""
    mine = pki.ensure(plan(), tmp_path / "fresh", write=False)
    pki.ensure(plan(), tmp_path / "fresh")  # another run made the PKI first
    theirs = (tmp_path / "fresh" / "ca.crt").read_bytes()
    with pytest.raises(PKIError, match="changed while this run worked on it"):
        pki.save(mine)
    assert (tmp_path / "fresh" / "ca.crt").read_bytes() == theirs
    pki.ensure(plan(), tmp_path / "b")
    mine = pki.ensure(plan(lb_dns_names=("nlb-1.elb.amazonaws.com",)), tmp_path / "b", write=False)
    pki.ensure(plan(lb_dns_names=("nlb-2.elb.amazonaws.com",)), tmp_path / "b")
    with pytest.raises(PKIError, match="changed while this run worked on it"):
        pki.save(mine)
    assert "nlb-2.elb.amazonaws.com" in pki.sans(cert(tmp_path / "b", "apiserver"))[0]
