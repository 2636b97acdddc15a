"""bakery-node's agent core: identity from instance-data, the description and CA material
from the store (checked against digests), its own leaves, the same tree `bakery render`
writes, and real etcd members started from what the agent wrote."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest
from cryptography import x509

from bakery import discovery, pki, spec, topology
from bakery.cli import main as bakery_main
from bakery.errors import NodeError
from bakery.etcd import TLS, Client
from bakery.node import description, identity
from bakery.node.agent import Agent, NodeConfig
from bakery.node.join import Timing
from bakery.providers.base import LBAddress
from bakery.store import layout
from bakery.store.folder import FolderStore
from tests.etcd_fixtures import Proc, RenderedCluster, localize, manifest_command, wait_healthy
from tests.moto_server import moto, moto_session  # noqa: F401

KEY_MARKERS = (b"PRIVATE KEY", b"client-key-data")


def instance_data(path: Path, instance_id: str, hostname: str, address: str | None, zone: str = "local") -> Path:
    doc = {"v1": {"instance_id": instance_id, "local_hostname": hostname, "availability_zone": zone,
                  "cloud_name": "nocloud"}, "ds": {"meta_data": {"instance-id": instance_id}}}
    if address:
        doc["ds"]["meta_data"]["local-ipv4"] = address
    path.write_text(json.dumps(doc))
    return path


# -- identity --------------------------------------------------------------------------------


def test_identity_from_ec2_gce_and_nocloud_instance_data(tmp_path: Path) -> None:
    ec2 = {"v1": {"instance_id": "i-0abc", "local_hostname": "ip-10-0-1-5.ec2.internal", "availability_zone": "us-east-1a",
                  "cloud_name": "aws"}, "ds": {"meta-data": {"local-ipv4": "10.0.1.5"}}}
    gce = {"v1": {"instance-id": "4520", "local-hostname": "prod-master-abcd.c.proj.internal",
                  "availability-zone": "projects/123/zones/us-central1-b", "cloud-name": "gce"},
           "ds": {"meta_data": {"instance-id": "4520"}}}
    a = identity.parse(ec2)
    assert (a.instance_id, a.hostname, a.zone, a.address) == ("i-0abc", "ip-10-0-1-5", "us-east-1a", "10.0.1.5")
    g = identity.parse(gce)
    assert (g.instance_id, g.hostname, g.zone, g.address) == ("4520", "prod-master-abcd", "us-central1-b", None)
    n = identity.load(instance_data(tmp_path / "id.json", "local-master-0", "local-master-0", "10.240.0.10"))
    assert n.address == "10.240.0.10" and n.zone == "local"


@pytest.mark.parametrize(("doc", "message"), [
    ({}, "no 'v1' object"),
    ({"v1": {"local_hostname": "a"}}, "v1.instance_id is missing"),
    ({"v1": {"instance_id": "i-1", "local_hostname": "bad_name!"}}, "not a DNS label"),
    ({"v1": {"instance_id": "i-1\nx", "local_hostname": "a"}}, "not an instance id"),
    ({"v1": {"instance_id": "i-1", "local_hostname": "a"}, "ds": {"meta_data": {"local-ipv4": "10.0.0.300"}}}, "not an IPv4"),
])
def test_identity_refuses_what_it_cannot_use(doc: dict, message: str) -> None:
    with pytest.raises(NodeError, match=message):
        identity.parse(doc)


def test_identity_unreadable_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(NodeError, match="cannot read"):
        identity.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_bytes(b"\xff{")
    with pytest.raises(NodeError, match="not JSON"):
        identity.load(tmp_path / "bad.json")


# -- publish / fetch -------------------------------------------------------------------------


def _render(spec_file: Path, build: Path) -> None:
    assert bakery_main(["render", "-f", str(spec_file), "-o", str(build)]) == 0


@pytest.fixture
def cluster(tmp_path: Path) -> RenderedCluster:
    rc = RenderedCluster(tmp_path / "c", 3)
    _render(rc.spec_file, rc.build)
    return rc


def _publish(rc: RenderedCluster, store) -> tuple[str, list[str]]:
    s = spec.load(rc.spec_file)
    keys = pki.load(topology.plan(s), rc.build / "lo" / "pki")
    return description.publish(store, s, LBAddress((), ()), discovery.bootstrap_for(s), keys)


def test_publish_writes_ca_material_and_description_then_nothing_on_rerun(cluster: RenderedCluster, tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "store")
    digest, written = _publish(cluster, store)
    assert set(written) == {layout.pki("lo", rel) for rel in description.ca_files(spec.load(cluster.spec_file))} | {
        layout.description("lo"), layout.description_by_digest("lo", digest)}
    assert written[-1] == layout.description("lo")  # the pointer last
    # no leaf certificate or leaf key leaves the operator's machine
    assert not [k for k in store.list("lo/") if "apiserver" in k or "nodes/" in k]
    assert _publish(cluster, store) == (digest, [])
    desc = description.fetch(store, "lo", digest)
    assert desc.spec == spec.load(cluster.spec_file) and desc.digest == digest


def test_fetch_refuses_a_changed_description_or_ca_object(cluster: RenderedCluster, tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "store")
    digest, _ = _publish(cluster, store)
    with pytest.raises(NodeError, match="missing; was the cluster published"):
        description.fetch(store, "lo", "sha256:" + "0" * 64)
    key = layout.description_by_digest("lo", digest)
    good = store.get(key)
    store.put(key, good.replace(b'"masters": 3', b'"masters": 5'))
    with pytest.raises(NodeError, match="digest sha256:[0-9a-f]+ is not " + digest):
        description.fetch(store, "lo", digest)
    store.put(key, good)
    desc = description.fetch(store, "lo", digest)
    store.put(layout.pki("lo", "etcd/ca.key"), b"-----BEGIN EC PRIVATE KEY-----\nswapped\n")
    with pytest.raises(NodeError, match=r"etcd/ca.key: digest .* is not .*the one the description lists"):
        description.fetch_ca_material(store, desc)


# -- the agent on real etcd -------------------------------------------------------------------


class EtcdStarter:
    """The start commands' runner: records them, and where the kubelet would start the
    etcd static pod, starts the real etcd from the manifest the agent wrote."""

    def __init__(self, root: Path, binary: Path, data: Path, log: Path) -> None:
        self.root, self.binary, self.data, self.log = root, binary, data, log
        self.commands: list[list[str]] = []
        self.proc: Proc | None = None

    def __call__(self, argv) -> None:
        self.commands.append(list(argv))
        if "kubelet.service" in argv:
            manifest = self.root / "etc/kubernetes/manifests/etcd.manifest"
            self.proc = Proc(localize(manifest_command(manifest), self.binary, self.root, self.data), self.log)


def _agents(rc: RenderedCluster, store: FolderStore, digest: str, tmp: Path, etcd_bin: Path) -> list[tuple[Agent, EtcdStarter]]:
    out = []
    for i, (name, address) in enumerate(zip(rc.names, rc.addresses, strict=True)):
        ident = identity.load(instance_data(tmp / f"id-{i}.json", f"i-{i:04x}", name, address))
        root = tmp / f"root-{i}"
        starter = EtcdStarter(root, etcd_bin, tmp / f"data-{i}", tmp / f"etcd-{i}.log")
        agent = Agent(NodeConfig("lo", store.url, digest), ident, store, root=root,
                      state_dir=tmp / f"state-{i}", run=starter, etcd_data_dir=tmp / f"data-{i}")
        out.append((agent, starter))
    return out


def test_three_agents_assemble_etcd_and_write_what_render_writes(cluster: RenderedCluster, tmp_path: Path, etcd_bin: Path) -> None:
    store = FolderStore(tmp_path / "store")
    digest, _ = _publish(cluster, store)
    agents = _agents(cluster, store, digest, tmp_path, etcd_bin)
    errors: list[BaseException] = []

    def run(a: Agent) -> None:
        try:
            a.apply()
        except BaseException as e:  # reported below, with the etcd logs
            errors.append(e)

    threads = [threading.Thread(target=run, args=(a,)) for a, _ in agents]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, f"{errors}\n" + "\n".join(s.proc.tail() for _, s in agents if s.proc)
        assert all(not t.is_alive() for t in threads)
        state = tmp_path / "state-0" / "pki" / "etcd"
        tls = TLS(state / "ca.crt", state / "healthcheck-client.crt", state / "healthcheck-client.key")
        with Client(cluster.urls, tls) as c:
            wait_healthy(c, cluster.urls, 30)
            assert sorted(m.name for m in c.member_list()) == sorted(cluster.names)
            assert c.put("/agent", "ok") > 0

        for (agent, starter), name in zip(agents, cluster.names, strict=True):
            rendered = cluster.node_files(name)
            mine = {p.relative_to(agent.root): p for p in agent.root.rglob("*") if p.is_file()}
            theirs = {p.relative_to(rendered): p for p in rendered.rglob("*") if p.is_file()}
            assert set(mine) == set(theirs), set(mine) ^ set(theirs)
            cas = [x509.load_pem_x509_certificate((agent.root / "etc/kubernetes/pki" / rel).read_bytes())
                   for rel in ("ca.crt", "etcd/ca.crt", "front-proxy-ca.crt")]
            for rel, path in mine.items():
                assert path.stat().st_mode & 0o777 == theirs[rel].stat().st_mode & 0o777, rel
                data = path.read_bytes()
                if str(rel).endswith(".crt"):
                    cert = x509.load_pem_x509_certificate(data)
                    issuer = next(ca for ca in cas if ca.subject == cert.issuer)
                    cert.verify_directly_issued_by(issuer)  # checks the signature, not only the name
                elif not (str(rel).endswith((".key", ".conf"))):
                    # everything but the node's own keys and certificates is byte-identical
                    assert data == theirs[rel].read_bytes(), rel
            # the leaf keys were made on the node: none is the one render made on the operator's machine
            assert (agent.root / "etc/kubernetes/pki/apiserver.key").read_bytes() != (rendered / "etc/kubernetes/pki/apiserver.key").read_bytes()
            assert any("kubelet.service" in c for c in starter.commands)
    finally:
        for _, s in agents:
            if s.proc:
                s.proc.stop()


def test_a_failure_before_files_writes_nothing_under_the_root(cluster: RenderedCluster, tmp_path: Path, etcd_bin: Path) -> None:
    store = FolderStore(tmp_path / "store")
    digest, _ = _publish(cluster, store)
    store.delete(layout.pki("lo", "sa.key"))
    agent, starter = _agents(cluster, store, digest, tmp_path, etcd_bin)[0]
    with pytest.raises(NodeError, match=r"sa\.key: missing CA object"):
        agent.apply()
    assert not agent.root.exists() and starter.commands == []


def test_an_instance_outside_the_masters_subnet_is_refused(cluster: RenderedCluster, tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "store")
    digest, _ = _publish(cluster, store)
    ident = identity.load(instance_data(tmp_path / "id.json", "i-9", "stray", "127.1.2.3"))
    agent = Agent(NodeConfig("lo", store.url, digest), ident, store, root=tmp_path / "root", state_dir=tmp_path / "st")
    with pytest.raises(NodeError, match="outside the masters' subnet"):
        agent.prepare()


def test_node_config_is_checked(tmp_path: Path) -> None:
    p = tmp_path / "node.json"
    p.write_text(json.dumps({"cluster": "lo", "store": "file:///x", "digest": "sha256:" + "a" * 64}))
    assert NodeConfig.load(p).cluster == "lo"
    p.write_text(json.dumps({"cluster": "Lo\n", "store": "file:///x", "digest": "d"}))
    with pytest.raises(NodeError, match="is not a cluster name"):
        NodeConfig.load(p)
    p.write_text("{")
    with pytest.raises(NodeError, match="not a bakery node config"):
        NodeConfig.load(p)


def test_node_user_data_is_small_and_secret_free(cluster: RenderedCluster, tmp_path: Path) -> None:
    from bakery import render

    store = FolderStore(tmp_path / "store")
    digest, _ = _publish(cluster, store)
    ud = render.node_user_data(NodeConfig("lo", store.url, digest).to_json(), "aws")
    assert len(ud.encoded) <= render.NODE_USER_DATA_BUDGET
    assert not any(m in ud.plain for m in KEY_MARKERS)
    assert digest.encode() in ud.plain



def test_node_user_data_passes_cloud_inits_schema() -> None:
    from bakery import render, validate

    schema = validate.cloud_init_schema()
    from tests.conftest import need

    need("cloud-init's schema", schema is not None, "make setup-system (Debian cloud-init)")
    ud = render.node_user_data(NodeConfig("lo", "s3://b/p", "sha256:" + "a" * 64).to_json(), "gcp", ssh_authorized_keys=["ssh-ed25519 AAAA x"])
    assert validate.check_cloud_config(ud.plain, schema) == []
    files = validate.write_files(ud.plain)
    assert json.loads(files["/etc/bakery/node.json"]["content"])["store"] == "s3://b/p"


@pytest.fixture(params=["folder", "s3"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path):
    """The agents' store: a folder, or S3 (boto3 against moto's server) as on AWS."""
    if request.param == "folder":
        return FolderStore(tmp_path / "store")
    from bakery.store.s3 import S3Store

    server = request.getfixturevalue("moto")
    client = server.client("s3")
    client.create_bucket(Bucket="agents")
    return S3Store("agents", "clusters", client=client)


def test_group_masters_bootstrap_through_the_store_and_a_replacement_takes_a_dead_ones_place(
        tmp_path: Path, etcd_bin: Path, any_store) -> None:
    """Masters as cattle: three instances at addresses no spec lists bootstrap etcd in
    `store` mode; one dies, a fourth at a new address replaces it as a learner, promoted."""
    rc = RenderedCluster(tmp_path / "c", 3, bootstrap="store")
    _render(rc.spec_file, rc.build)
    store = any_store
    digest, _ = _publish(rc, store)
    prefix = rc.addresses[0].rsplit(".", 1)[0]
    hosts = {"m-a": f"{prefix}.21", "m-b": f"{prefix}.22", "m-c": f"{prefix}.23", "m-d": f"{prefix}.24"}
    dead: set[str] = set()
    timing = dataclasses.replace(Timing(), poll=0.2, backoff=1.0, quorum=120, promote=60, reach=60, healthy=60)

    def agent(name: str) -> tuple[Agent, EtcdStarter]:
        ident = identity.load(instance_data(tmp_path / f"id-{name}.json", f"i-{name}", name, hosts[name]))
        starter = EtcdStarter(tmp_path / f"root-{name}", etcd_bin, tmp_path / f"data-{name}", tmp_path / f"etcd-{name}.log")
        return Agent(NodeConfig("lo", store.url, digest), ident, store, root=tmp_path / f"root-{name}",
                     state_dir=tmp_path / f"state-{name}", run=starter, etcd_data_dir=tmp_path / f"data-{name}",
                     is_alive=lambda member: member not in dead, timing=timing), starter

    agents = {n: agent(n) for n in ("m-a", "m-b", "m-c")}
    results: dict[str, object] = {}

    def run(name: str, a: Agent) -> None:
        try:
            results[name] = a.apply()
        except BaseException as e:  # reported below, with the etcd logs
            results[name] = e

    try:
        threads = [threading.Thread(target=run, args=(n, a)) for n, (a, _) in agents.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        logs = "\n".join(s.proc.tail() for _, s in agents.values() if s.proc)
        assert all(not isinstance(r, BaseException) for r in results.values()), f"{results}\n{logs}"
        assert sorted(r.how for r in results.values()) == ["bootstrap", "learner", "learner"], results
        state = tmp_path / "state-m-a" / "pki" / "etcd"
        tls = TLS(state / "ca.crt", state / "healthcheck-client.crt", state / "healthcheck-client.key")
        urls = [f"https://{hosts[n]}:{rc.client_port}" for n in ("m-a", "m-b", "m-c")]
        with Client(urls, tls) as c:
            assert sorted((m.name, m.is_learner) for m in c.member_list()) == [("m-a", False), ("m-b", False), ("m-c", False)]
        assert store.list(layout.bootstrapped("lo"))  # the marker: later joins are day 2

        agents["m-b"][1].proc.stop()
        dead.add("m-b")
        agents["m-d"] = agent("m-d")
        joined = agents["m-d"][0].apply()
        assert joined.how == "learner" and joined.removed == ("m-b",)
        with Client([urls[0], urls[2]], tls) as c:
            wait_healthy(c, [urls[0], urls[2], f"https://{hosts['m-d']}:{rc.client_port}"], 60)
            assert sorted((m.name, m.is_learner) for m in c.member_list()) == [("m-a", False), ("m-c", False), ("m-d", False)]
    finally:
        for _, s in agents.values():
            if s.proc:
                s.proc.stop()
