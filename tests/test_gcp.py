"""GCP provider, `gcp.masters: instances` (plain masters at the plan's addresses; the managed
groups are in test_gcp_group.py): the real google-cloud-compute clients against the fake GCE server.

The fake keeps state like GCE (409 on duplicate names, 404, operations, in-use checks,
filters, pagination, metadata limits), so these tests prove bakery's own idempotence:
nothing here patches the provider; faults come from the server.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from bakery import spec as specmod
from bakery import state
from bakery.errors import BakeError, ProviderError, RenderError
from bakery.providers.base import LBAddress, RenderedNode
from bakery.providers.gcp import GcpProvider
from bakery.providers.gcp.api import Compute
from bakery.render.userdata import UserData, decode, encode
from bakery.topology import plan
from tests.fake_gce import FakeGCE, Fault
from tests.fake_gcs import FakeGCS

PROJECT = "test-project"
IMAGE = "bakery-k8s-1-31-4-abc123"


def spec_text(masters: int = 3, scheme: str = "internet-facing", image: str | None = IMAGE, name: str = "demo", **gcp: str) -> str:
    extra = "".join(f"  {k}: {v}\n" for k, v in gcp.items())
    return (
        f"name: {name}\nprovider: gcp\nmasters: {masters}\n"
        f"load_balancer:\n  scheme: {scheme}\n  allowed_cidrs: [10.0.0.0/8, 192.0.2.0/24]\n"
        f"gcp:\n  project: {PROJECT}\n  masters: instances\n" + (f"  image: {image}\n" if image else "") + extra
    )


@pytest.fixture
def gce() -> Iterator[FakeGCE]:
    with FakeGCE(project=PROJECT).running() as fake:
        fake.add_image(IMAGE)
        yield fake


@pytest.fixture(autouse=True)
def gcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGCS]:
    """The store's bucket and the masters' service account (bakery/providers/gcp/storage.py), for every test."""
    with FakeGCS(project=PROJECT).running() as fake:
        monkeypatch.setenv("BAKERY_GCS_ENDPOINT_URL", fake.url)
        monkeypatch.setenv("BAKERY_GCP_IAM_ENDPOINT_URL", fake.url)
        yield fake


class Renderer:
    """A render callback with fixed user-data per node; remembers the LB address it got."""

    def __init__(self, spec: specmod.ClusterSpec, size: int = 0) -> None:
        self.spec, self.size, self.calls = spec, size, []  # type: ignore[var-annotated]

    def __call__(self, lb: LBAddress) -> dict[str, RenderedNode]:
        self.calls.append(lb)
        out = {}
        for n in plan(self.spec, lb_ips=lb.ips).nodes:
            plain = f"#cloud-config\nhostname: {n.name}\n# lb {lb.ips[0]}\n".encode() + b"#" * self.size
            out[n.name] = RenderedNode(n.name, n.address, n.zone, encode(plain, "gcp"))
        return out


def make(gce: FakeGCE, tmp_path: Path, text: str | None = None, **kw: Any) -> tuple[GcpProvider, specmod.ClusterSpec]:
    spec = specmod.parse((text or spec_text()) + f"  endpoint_url: {gce.url}\n")
    return GcpProvider(spec, state.paths(spec.name, tmp_path), **kw), spec


def mutations(gce: FakeGCE) -> int:
    return sum(1 for c in gce.calls if c.kind in ("insert", "delete") or (c.kind.startswith("action:") and c.kind != "action:listInstances" and c.kind != "action:getHealth"))


def instance_user_data(inst: dict[str, Any]) -> bytes:
    meta = {i["key"]: i["value"] for i in inst["metadata"]["items"]}
    return decode(meta["user-data"].encode(), meta.get("user-data-encoding", "plain"))  # type: ignore[arg-type]


EXPECTED = {
    "addresses": ["demo-apiserver", "demo-master-0", "demo-master-1", "demo-master-2"],
    "backendServices": ["demo-apiserver"],
    "firewalls": ["demo-apiserver", "demo-health-checks", "demo-masters-internal"],
    "forwardingRules": ["demo-apiserver"],
    "healthChecks": ["demo-apiserver"],
    "instanceGroups": ["demo-masters-us-central1-a", "demo-masters-us-central1-b", "demo-masters-us-central1-c"],
    "instances": ["demo-master-0", "demo-master-1", "demo-master-2"],
}


def test_fresh_up_creates_the_cluster_as_planned(gce: FakeGCE, tmp_path: Path) -> None:
    gce.op_seconds = 0.02  # operations are RUNNING at first: bakery must wait through its own clients
    provider, spec = make(gce, tmp_path)
    renderer = Renderer(spec)
    result = provider.up(renderer)

    assert gce.inventory() == EXPECTED
    assert gce.count("wait") > 0
    lb = next(a for a in gce.resources("addresses") if a["name"] == "demo-apiserver")
    assert lb["addressType"] == "EXTERNAL"
    assert renderer.calls == [LBAddress(ips=(lb["address"],))]  # reserved first, then rendered with it
    assert result.endpoint == f"https://{lb['address']}:6443"
    assert not result.existing and not result.drift

    rendered = renderer(LBAddress(ips=(lb["address"],)))
    by_name = {i["name"]: i for i in gce.resources("instances")}
    for node in plan(spec).nodes:
        inst = by_name[node.name]
        assert inst["networkInterfaces"][0]["networkIP"] == node.address
        assert inst["zone"].endswith(f"/zones/{node.zone}")
        assert instance_user_data(inst) == rendered[node.name].user_data.plain
        assert inst["labels"] == {"bakery-cluster": "demo", "bakery-node": node.name, "bakery-role": "master"}
        assert inst["tags"]["items"] == ["demo-master"]
        assert inst["shieldedInstanceConfig"] == {"enableSecureBoot": True, "enableVtpm": True, "enableIntegrityMonitoring": True}
        assert inst["disks"][0]["initializeParams"]["sourceImage"] == f"projects/{PROJECT}/global/images/{IMAGE}"
        assert inst["serviceAccounts"] == [{"email": f"demo-bakery@{PROJECT}.iam.gserviceaccount.com",
                                             "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}]
        address = next(a for a in gce.resources("addresses") if a["name"] == node.name)
        assert (address["addressType"], address["address"]) == ("INTERNAL", node.address)
        assert gce.members(f"demo-masters-{node.zone}") == [node.name]

    firewalls = {f["name"]: f for f in gce.resources("firewalls")}
    assert firewalls["demo-masters-internal"]["sourceTags"] == ["demo-master"]
    assert firewalls["demo-masters-internal"]["allowed"] == [{"IPProtocol": "tcp", "ports": ["2379-2380", "10250"]}]
    assert firewalls["demo-apiserver"]["sourceRanges"] == ["10.0.0.0/8", "192.0.2.0/24"]
    assert firewalls["demo-health-checks"]["sourceRanges"] == ["35.191.0.0/16", "130.211.0.0/22", "209.85.152.0/22", "209.85.204.0/22"]
    assert all(f["targetTags"] == ["demo-master"] and f["allowed"][-1]["ports"][-1] in ("6443", "10250") for f in firewalls.values())

    (hc,) = gce.resources("healthChecks")
    assert (hc["type"], hc["tcpHealthCheck"]["port"]) == ("TCP", 6443)
    (svc,) = gce.resources("backendServices")
    assert (svc["loadBalancingScheme"], svc["protocol"]) == ("EXTERNAL", "TCP")
    assert sorted(b["group"].rsplit("/", 1)[1] for b in svc["backends"]) == EXPECTED["instanceGroups"]
    (rule,) = gce.resources("forwardingRules")
    assert (rule["IPAddress"], rule["ports"], rule["loadBalancingScheme"]) == (lb["address"], ["6443"], "EXTERNAL")

    recorded = state.load(provider.paths)["gcp"]
    assert recorded["lb_address"] == lb["address"]
    assert recorded["instances"]["demo-master-1"]["id"] == by_name["demo-master-1"]["id"]


def test_second_up_makes_no_insert_and_no_other_change(gce: FakeGCE, tmp_path: Path) -> None:
    provider, spec = make(gce, tmp_path)
    provider.up(Renderer(spec))
    before = len(gce.calls)
    result = provider.up(Renderer(spec))
    later = gce.calls[before:]
    assert [c for c in later if c.kind not in ("get", "list", "action:listInstances")] == []
    assert result.created == [] and result.drift == []
    # + the three group memberships, the store's bucket, the masters' service account and its bindings
    assert len(result.existing) == sum(len(v) for v in EXPECTED.values()) + 3 + 3 + 1  # + the masters' path
    assert gce.inventory() == EXPECTED


def reference_mutations(tmp_path: Path) -> int:
    with FakeGCE(project=PROJECT).running() as fake:
        fake.add_image(IMAGE)
        provider, spec = make(fake, tmp_path / "reference")
        provider.up(Renderer(spec))
        return fake.count("insert") + fake.count("action:addInstances")


@pytest.mark.parametrize("op_error", [False, True], ids=["http-503", "operation-error"])
def test_up_interrupted_after_each_step_converges_without_duplicates(tmp_path: Path, op_error: bool) -> None:
    total_inserts = reference_mutations(tmp_path) - 3  # three addInstances, one per zone
    for kind, count in (("insert", total_inserts), ("action:addInstances", 3)):
        for k in range(count):
            with FakeGCE(project=PROJECT).running() as fake:
                fake.add_image(IMAGE)
                provider, spec = make(fake, tmp_path / f"{kind}-{k}-{op_error}")
                fake.faults.append(Fault(kind, op_error=op_error, after=k))
                with pytest.raises(ProviderError):
                    provider.up(Renderer(spec))
                partial = fake.inventory()
                assert fake.inventory() != EXPECTED or kind == "action:addInstances", k
                result = provider.up(Renderer(spec))
                assert fake.inventory() == EXPECTED, (kind, k, partial)
                for zone in ("a", "b", "c"):
                    assert len(fake.members(f"demo-masters-us-central1-{zone}")) == 1
                assert result.existing, "the rerun reused what the interrupted run made"
                assert not result.drift


def test_up_killed_while_waiting_on_operations_converges(tmp_path: Path) -> None:
    """The inserts were accepted but bakery stopped before their operations finished."""
    for k in range(4):
        with FakeGCE(project=PROJECT, op_seconds=0.05).running() as fake:
            fake.add_image(IMAGE)
            provider, spec = make(fake, tmp_path / f"wait-{k}")
            fake.faults.append(Fault("wait", status=503, after=k))
            with pytest.raises(ProviderError):
                provider.up(Renderer(spec))
            provider.up(Renderer(spec))
            assert fake.inventory() == EXPECTED


def test_down_interrupted_after_each_delete_finishes_on_rerun(tmp_path: Path) -> None:
    total = sum(len(v) for v in EXPECTED.values()) + 2  # + the masters' service account, its bindings
    for k in range(0, total, 3):
        with FakeGCE(project=PROJECT).running() as fake:
            fake.add_image(IMAGE)
            provider, spec = make(fake, tmp_path / f"down-{k}")
            provider.up(Renderer(spec))
            fake.faults.append(Fault("delete", status=503, after=k))
            with pytest.raises(ProviderError):
                provider.down()
            assert fake.inventory() != {}
            first = list(provider.ledger.deleted)  # what the interrupted run got done
            second = provider.down()
            assert sorted(first + second) == sorted(set(first + second)) and len(first + second) == total
            assert fake.inventory() == {}


def test_down_deletes_exactly_the_clusters_resources(gce: FakeGCE, tmp_path: Path) -> None:
    gce.page_size = 2  # down lists by label/marker across pages
    other, other_spec = make(gce, tmp_path, spec_text(name="other", network="default"))
    # another cluster in the same project, on other addresses
    other_spec = specmod.parse(spec_text(name="other").replace("load_balancer:", "network:\n  subnet: 10.250.0.0/24\nload_balancer:") + f"  endpoint_url: {gce.url}\n")
    other = GcpProvider(other_spec, state.paths("other", tmp_path))
    other.up(Renderer(other_spec))
    others = gce.inventory()

    provider, spec = make(gce, tmp_path)
    provider.up(Renderer(spec))
    deleted = provider.down()
    assert len(deleted) == sum(len(v) for v in EXPECTED.values()) + 2  # + the masters' service account, its bindings
    assert deleted.index("forwarding rule demo-apiserver") < deleted.index("backend service demo-apiserver") < deleted.index("health check demo-apiserver")
    assert gce.inventory() == others  # the other cluster is untouched
    for res in (r for col in ("addresses", "instances", "forwardingRules") for r in gce.resources(col)):
        assert res["labels"]["bakery-cluster"] == "other"
    assert "gcp" not in state.load(provider.paths)
    assert provider.down() == []  # a second down finds nothing

    other.down()
    assert gce.inventory() == {}


def test_down_after_an_interrupted_up(gce: FakeGCE, tmp_path: Path) -> None:
    provider, spec = make(gce, tmp_path)
    gce.faults.append(Fault("insert", "backendServices"))
    with pytest.raises(ProviderError, match="backend service demo-apiserver"):
        provider.up(Renderer(spec))
    assert "instances" in gce.inventory()
    provider.down()
    assert gce.inventory() == {}


def test_status_lists_masters_health_and_endpoint(gce: FakeGCE, tmp_path: Path) -> None:
    provider, spec = make(gce, tmp_path)
    provider.up(Renderer(spec))
    healthy = next(i for i in gce.resources("instances") if i["name"] == "demo-master-1")
    gce.health[healthy["selfLink"]] = "HEALTHY"
    st = provider.status()
    assert [(n.name, n.address, n.zone, n.state, n.health, n.image) for n in st.nodes] == [
        ("demo-master-0", "10.240.0.10", "us-central1-a", "RUNNING", "unhealthy", IMAGE),
        ("demo-master-1", "10.240.0.11", "us-central1-b", "RUNNING", "healthy", IMAGE),
        ("demo-master-2", "10.240.0.12", "us-central1-c", "RUNNING", "unhealthy", IMAGE),
    ]
    assert st.endpoint == state.load(provider.paths)["gcp"]["endpoint"]
    provider.down()
    assert provider.status().nodes == [] and provider.status().endpoint is None


def test_up_wait_returns_when_healthy_and_fails_clearly_when_not(gce: FakeGCE, tmp_path: Path) -> None:
    provider, spec = make(gce, tmp_path, health_timeout=0.2, poll_seconds=0.05)
    with pytest.raises(ProviderError, match="not healthy behind demo-apiserver"):
        provider.up(Renderer(spec), wait=True)
    for inst in gce.resources("instances"):
        gce.health[inst["selfLink"]] = "HEALTHY"
    assert provider.up(Renderer(spec), wait=True).created == []


def test_internal_lb_and_service_account(gce: FakeGCE, gcs: FakeGCS, tmp_path: Path) -> None:
    gcs.handle("POST", f"/v1/projects/{PROJECT}/serviceAccounts", {}, {}, b'{"accountId": "masters"}')
    text = spec_text(scheme="internal", subnetwork="masters", service_account="masters@test-project.iam.gserviceaccount.com")
    gce.add_subnetwork("us-central1", "masters", cidr="10.128.8.0/24", private_ip_google_access=True)
    provider, spec = make(gce, tmp_path, text)
    provider.up(Renderer(spec))
    lb = next(a for a in gce.resources("addresses") if a["name"] == "demo-apiserver")
    subnet = f"projects/{PROJECT}/regions/us-central1/subnetworks/masters"
    assert (lb["addressType"], lb["subnetwork"]) == ("INTERNAL", subnet)
    (svc,) = gce.resources("backendServices")
    assert svc["loadBalancingScheme"] == "INTERNAL" and svc["network"].endswith("/networks/default")
    probes = next(f for f in gce.resources("firewalls") if f["name"] == "demo-health-checks")
    assert probes["sourceRanges"] == ["35.191.0.0/16", "130.211.0.0/22"]
    (rule,) = gce.resources("forwardingRules")
    assert (rule["loadBalancingScheme"], rule["subnetwork"], rule["IPAddress"]) == ("INTERNAL", subnet, lb["address"])
    for inst in gce.resources("instances"):
        assert inst["serviceAccounts"] == [{"email": "masters@test-project.iam.gserviceaccount.com", "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}]
        assert inst["networkInterfaces"][0]["subnetwork"] == subnet


def test_large_user_data_goes_base64_with_its_encoding_key(gce: FakeGCE, tmp_path: Path) -> None:
    provider, spec = make(gce, tmp_path)
    renderer = Renderer(spec, size=300_000)  # over 256 KB plain; gzip+base64 fits
    provider.up(renderer)
    rendered = renderer(renderer.calls[0])
    for inst in gce.resources("instances"):
        meta = {i["key"]: i["value"] for i in inst["metadata"]["items"]}
        assert meta["user-data-encoding"] == "base64"
        assert base64.b64decode(meta["user-data"])[:2] == b"\x1f\x8b"
        assert instance_user_data(inst) == rendered[inst["name"]].user_data.plain


def test_metadata_over_the_limit_is_refused_before_any_instance_call(gce: FakeGCE, tmp_path: Path) -> None:
    provider, spec = make(gce, tmp_path)

    def too_big(lb: LBAddress) -> dict[str, RenderedNode]:
        # incompressible and already over the limit: what a render gone wrong would hand over
        blob = base64.b64encode(bytes(range(256)) * 1100)
        return {n.name: RenderedNode(n.name, n.address, n.zone, UserData(blob, blob, "plain", 262_144)) for n in plan(spec, lb_ips=lb.ips).nodes}

    with pytest.raises(RenderError, match="metadata limit") as e:
        provider.up(too_big)
    assert "262,144" in str(e.value.lines())
    assert gce.count("insert", "instances") == 0 and gce.count("get", "instances") == 0


def test_image_from_images_json_or_a_clear_error_before_any_call(gce: FakeGCE, tmp_path: Path) -> None:
    provider, spec = make(gce, tmp_path, spec_text(image=None))
    with pytest.raises(ProviderError, match="no image"):
        provider.up(Renderer(spec))
    assert gce.calls == []
    provider.paths.images.parent.mkdir(parents=True, exist_ok=True)
    provider.paths.images.write_text("not json")
    with pytest.raises(BakeError, match=r"images\.json: unreadable"):
        provider.up(Renderer(spec))
    # the shape bakery.bake.images records
    provider.paths.images.write_text(json.dumps({"version": 1, "cluster": "demo", "gcp": {"target": "gcp", "image": IMAGE, "project": PROJECT, "hash": "abc123"},
                                                 "aws": {"image": "ami-1"}, "images": []}))
    provider.up(Renderer(spec))
    assert {i["disks"][0]["initializeParams"]["sourceImage"] for i in gce.resources("instances")} == {f"projects/{PROJECT}/global/images/{IMAGE}"}


def test_a_missing_image_is_a_provider_error_naming_the_instance(gce: FakeGCE, tmp_path: Path) -> None:
    provider, spec = make(gce, tmp_path, spec_text(image="no-such-image"))
    with pytest.raises(ProviderError, match=r"create instance demo-master-\d.*no-such-image"):
        provider.up(Renderer(spec))


def test_masters_spread_over_pages_of_group_members(gce: FakeGCE, tmp_path: Path) -> None:
    gce.page_size = 1  # every list, and every group's member list, one item a page
    provider, spec = make(gce, tmp_path, spec_text(masters=7))
    provider.up(Renderer(spec))
    before = gce.count("insert") + gce.count("action:addInstances")
    assert provider.up(Renderer(spec)).created == []
    assert gce.count("insert") + gce.count("action:addInstances") == before
    assert gce.members("demo-masters-us-central1-a") == ["demo-master-0", "demo-master-3", "demo-master-6"]


def test_an_address_holding_another_ip_is_refused_not_reused(gce: FakeGCE, tmp_path: Path) -> None:
    provider, spec = make(gce, tmp_path)
    compute = Compute(PROJECT, gce.url)
    op = compute.client("Addresses").insert_unary(project=PROJECT, region="us-central1", address_resource=compute.types.Address(
        name="demo-master-1", address_type="INTERNAL", address="10.240.0.99"))
    compute.wait(op, "test address")
    with pytest.raises(ProviderError, match=r"holds 10\.240\.0\.99"):
        provider.up(Renderer(spec))
    assert gce.count("insert", "instances") == 0


def test_drift_in_user_data_is_reported_not_replaced(gce: FakeGCE, tmp_path: Path) -> None:
    provider, spec = make(gce, tmp_path)
    provider.up(Renderer(spec))
    result = provider.up(Renderer(spec, size=10))
    assert len(result.drift) == 3 and "rollout" in result.drift[0]
    assert result.created == []


def test_changed_allowed_cidrs_patch_the_firewall_in_place(gce: FakeGCE, tmp_path: Path) -> None:
    provider, spec = make(gce, tmp_path)
    provider.up(Renderer(spec))
    inserts = gce.count("insert")
    wider, _ = make(gce, tmp_path, spec_text().replace("[10.0.0.0/8, 192.0.2.0/24]", "[10.0.0.0/8, 198.51.100.0/24]"))
    result = wider.up(Renderer(spec))
    assert result.created == ["firewall rules of demo-apiserver"] and not result.drift
    assert gce.count("insert") == inserts and gce.count("action:patch", "firewalls") == 1
    fw = next(f for f in gce.resources("firewalls") if f["name"] == "demo-apiserver")
    assert fw["sourceRanges"] == ["10.0.0.0/8", "198.51.100.0/24"]
    assert wider.up(Renderer(spec)).created == []  # converged


def test_a_changed_lb_scheme_is_reported_as_drift(gce: FakeGCE, tmp_path: Path) -> None:
    provider, spec = make(gce, tmp_path)
    provider.up(Renderer(spec))
    internal, _ = make(gce, tmp_path, spec_text(scheme="internal"))
    result = internal.up(Renderer(spec))
    assert any("address demo-apiserver is EXTERNAL" in d for d in result.drift)
    assert any("backend service demo-apiserver is EXTERNAL" in d for d in result.drift)
    assert gce.inventory() == EXPECTED


def test_cloud_errors_become_one_line_with_what_to_do(gce: FakeGCE, tmp_path: Path) -> None:
    provider, spec = make(gce, tmp_path)
    gce.faults.append(Fault("insert", "addresses", status=403))
    with pytest.raises(ProviderError, match=r"roles/compute\.admin") as e:
        provider.up(Renderer(spec))
    assert "\n" not in e.value.message


def test_instance_template_round_trip(gce: FakeGCE, tmp_path: Path) -> None:
    provider, _ = make(gce, tmp_path)
    generic = b"## template: jinja\n#cloud-config\nhostname: {{ v1.local_hostname }}\n"
    name = provider.instance_template(encode(generic, "gcp"))
    (tpl,) = gce.resources("instanceTemplates")
    assert tpl["name"] == name and name.startswith("demo-master-")
    props = tpl["properties"]
    assert instance_user_data(props) == generic
    assert props["machineType"] == "e2-standard-2" and "networkIP" not in props["networkInterfaces"][0]
    assert props["labels"] == {"bakery-cluster": "demo", "bakery-role": "master"}
    assert props["tags"]["items"] == ["demo-master"]

    before = gce.count("insert")
    assert provider.instance_template(encode(generic, "gcp")) == name  # same content: reused
    assert gce.count("insert") == before
    changed = provider.instance_template(encode(generic + b"# v2\n", "gcp"))
    assert changed != name and len(gce.resources("instanceTemplates")) == 2
    assert state.load(provider.paths)["gcp"]["instance_template"] == changed
    provider.down()
    assert gce.inventory() == {}


def test_real_pipeline_render_puts_the_lb_address_in_the_certificate(gce: FakeGCE, tmp_path: Path) -> None:
    from bakery.pipeline import Cluster

    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(spec_text() + f"  endpoint_url: {gce.url}\n")
    cluster = Cluster.load(spec_file, tmp_path / "build")
    provider = GcpProvider(cluster.spec, cluster.paths)
    provider.up(cluster.render_callback())
    lb_ip = next(a for a in gce.resources("addresses") if a["name"] == "demo-apiserver")["address"]
    cert = x509.load_pem_x509_certificate((cluster.paths.pki / "apiserver.crt").read_bytes())
    sans = [str(ip) for ip in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)]
    assert lb_ip in sans
    for inst in gce.resources("instances"):
        assert instance_user_data(inst) == (cluster.paths.node(inst["name"]) / "user-data").read_bytes()


def test_replace_master_boots_the_same_name_and_address_with_new_user_data(gce: FakeGCE, tmp_path: Path) -> None:
    provider, spec = make(gce, tmp_path)
    provider.up(Renderer(spec))
    node = plan(spec).nodes[1]
    before = {i["name"]: i for i in gce.resources("instances")}
    new_plain = b"#cloud-config\nhostname: demo-master-1\n# replaced\n"
    provider.replace_master(RenderedNode(node.name, node.address, node.zone, encode(new_plain, "gcp")))

    after = {i["name"]: i for i in gce.resources("instances")}
    assert sorted(after) == sorted(before)
    assert after[node.name]["id"] != before[node.name]["id"], "a new instance, not the old one"
    assert after[node.name]["networkInterfaces"][0]["networkIP"] == node.address
    assert instance_user_data(after[node.name]) == new_plain
    for other in ("demo-master-0", "demo-master-2"):
        assert after[other]["id"] == before[other]["id"]
    assert gce.members(f"demo-masters-{node.zone}") == [node.name]


# -- the masters' path to Cloud Storage and the Compute API ---------------------------


def test_default_network_gets_private_google_access_and_every_master_a_path(gce: FakeGCE, tmp_path: Path) -> None:
    from tests.cloud_harness import Instance, gce_path

    provider, spec = make(gce, tmp_path)
    why = gce_path(gce)
    (default,) = [s for s in gce.resources("subnetworks") if s["region"].endswith("/us-central1")]
    assert default["privateIpGoogleAccess"] is False  # the project's auto-mode default, as GCE makes it
    provider.up(Renderer(spec))
    assert gce.resources("subnetworks")[0]["privateIpGoogleAccess"] is True
    masters = [i for i in gce.resources("instances") if i["name"].startswith("demo-master")]
    assert len(masters) == 3 and all(not i["networkInterfaces"][0].get("accessConfigs") for i in masters)
    assert [why(Instance(str(i["id"]), i["name"], "", "", b"")) for i in masters] == [None] * 3
    assert [c.kind for c in gce.calls].count("action:setPrivateIpGoogleAccess") == 1
    provider.up(Renderer(spec))  # found on: not set again
    assert [c.kind for c in gce.calls].count("action:setPrivateIpGoogleAccess") == 1


def test_user_subnetwork_without_a_path_is_refused_naming_it(gce: FakeGCE, tmp_path: Path) -> None:
    gce.add_subnetwork("us-central1", "masters", cidr="10.128.8.0/24")
    provider, spec = make(gce, tmp_path, spec_text(subnetwork="masters"))
    with pytest.raises(ProviderError) as e:
        provider.up(Renderer(spec))
    assert "subnetwork masters (us-central1, network default)" in e.value.message
    assert "Private Google Access" in e.value.message and "Cloud NAT" in e.value.message
    assert gce.resources("instances") == [] and "action:setPrivateIpGoogleAccess" not in [c.kind for c in gce.calls]
    # a Cloud NAT on the region's router that lists the subnetwork is a path
    gce.add_router("us-central1", "nat-router", nats=[{
        "name": "nat", "natIpAllocateOption": "AUTO_ONLY", "sourceSubnetworkIpRangesToNat": "LIST_OF_SUBNETWORKS",
        "subnetworks": [{"name": f"projects/{PROJECT}/regions/us-central1/subnetworks/masters",
                         "sourceIpRangesToNat": ["ALL_IP_RANGES"]}]}])
    provider.up(Renderer(spec))
    assert len(gce.resources("instances")) == 3


def test_a_network_without_a_route_to_the_internet_gateway_is_refused_naming_it(gce: FakeGCE, tmp_path: Path) -> None:
    """Private Google Access and Cloud NAT both leave through the default internet gateway: a
    hardened network that deleted GCE's default route has no path, whatever its subnetwork says.
    bakery refuses before anything is made, and never adds the route (it is the network's)."""
    from tests.cloud_harness import Instance, gce_path

    gce.remove("routes", "default-route-internet")
    provider, spec = make(gce, tmp_path)
    with pytest.raises(ProviderError) as e:
        provider.up(Renderer(spec))
    assert "network default has no route" in e.value.message and "default-internet-gateway" in e.value.message
    assert "gcloud compute routes create" in e.value.message
    kinds = [c.kind for c in gce.calls]
    assert gce.resources("instances") == [] and "action:setPrivateIpGoogleAccess" not in kinds
    route_calls = [c.kind for c in gce.calls if c.collection == "routes"]
    assert route_calls and set(route_calls) == {"list"}  # read, never written

    # a route for other instances' tag does not apply to the masters
    gce.add_route("tagged-out", "0.0.0.0/0", tags=["web"])
    with pytest.raises(ProviderError, match="network default has no route"):
        provider.up(Renderer(spec))
    # one for their tag does; the harness's reading of GCE's rules agrees instance by instance
    gce.add_route("masters-out", "0.0.0.0/0", tags=[provider.names.tag])
    provider.up(Renderer(spec))
    masters = [i for i in gce.resources("instances") if i["name"].startswith("demo-master")]
    why = gce_path(gce)
    assert [why(Instance(str(i["id"]), i["name"], "", "", b"")) for i in masters] == [None] * 3
    gce.remove("routes", "masters-out")
    assert all("has no route 0.0.0.0/0" in (why(Instance(str(i["id"]), i["name"], "", "", b"")) or "") for i in masters)


def test_a_route_to_private_googleapis_serves_private_google_access_not_a_cloud_nat(gce: FakeGCE, tmp_path: Path) -> None:
    """With a private DNS zone, a route to private.googleapis.com's 199.36.153.8/30 is all
    Private Google Access needs; a Cloud NAT translates only what a 0.0.0.0/0 route sends out."""
    gce.remove("routes", "default-route-internet")
    gce.add_route("google-apis", "199.36.153.8/30")
    gce.add_subnetwork("us-central1", "nat-only", cidr="10.128.9.0/24")
    gce.add_router("us-central1", "nat-router", nats=[{
        "name": "nat", "natIpAllocateOption": "AUTO_ONLY", "sourceSubnetworkIpRangesToNat": "LIST_OF_SUBNETWORKS",
        "subnetworks": [{"name": f"projects/{PROJECT}/regions/us-central1/subnetworks/nat-only",
                         "sourceIpRangesToNat": ["ALL_IP_RANGES"]}]}])
    provider, spec = make(gce, tmp_path, spec_text(subnetwork="nat-only"))
    with pytest.raises(ProviderError, match=r"network default has no route 0\.0\.0\.0/0"):
        provider.up(Renderer(spec))
    assert gce.resources("instances") == []

    gce.add_subnetwork("us-central1", "masters", cidr="10.128.8.0/24", private_ip_google_access=True)
    provider, spec = make(gce, tmp_path / "pga", spec_text(subnetwork="masters"))
    provider.up(Renderer(spec))
    assert len(gce.resources("instances")) == 3


def test_discovery_needs_a_cloud_nat(gce: FakeGCE, tmp_path: Path) -> None:
    text = spec_text().replace("gcp:\n", 'kubernetes_version: "1.36.3"\netcd:\n  bootstrap: discovery\n'
                                         "  discovery_url: https://discovery.etcd.io/abc\ngcp:\n")
    provider, spec = make(gce, tmp_path, text)
    with pytest.raises(ProviderError, match=r"etcd\.bootstrap: discovery.*no Cloud NAT.*etcd\.bootstrap store"):
        provider.up(Renderer(spec))
    assert gce.resources("instances") == []
    gce.add_router("us-central1", "nat-router", nats=[{"name": "nat", "natIpAllocateOption": "AUTO_ONLY",
                                                       "sourceSubnetworkIpRangesToNat": "ALL_SUBNETWORKS_ALL_IP_RANGES"}])
    provider.up(Renderer(spec))
    assert len(gce.resources("instances")) == 3
