"""Certificates: issued once, reused, re-issued (with the same key, and said so) only when
the plan's names change; keys 0600 and refused when looser."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

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
