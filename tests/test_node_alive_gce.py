"""bakery/node/alive_gce.py against a metadata server that answers as GCE's does (token only with
`Metadata-Flavor: Google`) and the fake GCE, whose managed groups repair under the same name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from bakery.node.alive_gce import COMPUTE_ENV, METADATA_ENV, TOKEN_PATH, alive
from tests.fake_gce import FakeGCE, Fault
from tests.fake_http import serving

P, Z = "test-project", "us-central1-a"


class Metadata(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path != TOKEN_PATH:
            status, body = 404, b"not found"
        elif self.headers.get("Metadata-Flavor") != "Google":
            status, body = 403, b"Missing Metadata-Flavor:Google header."
        else:
            status, body = 200, json.dumps({"access_token": "ya29.test", "expires_in": 3599, "token_type": "Bearer"}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def gce(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGCE]:
    with FakeGCE(project=P).running() as fake, serving(Metadata) as md:
        fake.add_image("img")
        monkeypatch.setenv(COMPUTE_ENV, fake.url)
        monkeypatch.setenv(METADATA_ENV, f"http://127.0.0.1:{md.server_address[1]}")
        yield fake


def test_alive_running_gone_replaced_and_unsure(gce: FakeGCE, monkeypatch: pytest.MonkeyPatch) -> None:
    kw: dict[str, Any] = {"transport": "rest", "client_options": {"api_endpoint": gce.url}, "credentials": AnonymousCredentials()}
    templates, migs, instances = compute_v1.InstanceTemplatesClient(**kw), compute_v1.InstanceGroupManagersClient(**kw), compute_v1.InstancesClient(**kw)
    templates.insert_unary(project=P, instance_template_resource=compute_v1.InstanceTemplate(name="t", properties=compute_v1.InstanceProperties(
        machine_type="e2-small", network_interfaces=[compute_v1.NetworkInterface()],
        disks=[compute_v1.AttachedDisk(boot=True, initialize_params=compute_v1.AttachedDiskInitializeParams(source_image=f"projects/{P}/global/images/img"))])))
    migs.insert_unary(project=P, zone=Z, instance_group_manager_resource=compute_v1.InstanceGroupManager(
        name="g", base_instance_name="m", instance_template=f"projects/{P}/global/instanceTemplates/t", target_size=1))
    (inst,) = gce.resources("instances")
    assert alive(P, Z, inst["name"]) is True
    assert alive(P, Z, inst["name"], instance_id=inst["id"]) is True
    assert alive(P, Z, "never-was") is False

    instances.delete_unary(project=P, zone=Z, instance=inst["name"])  # the group repairs it under the same name
    assert alive(P, Z, inst["name"]) is True  # a machine holds the name
    assert alive(P, Z, inst["name"], instance_id=inst["id"]) is False  # but not the one that ran the member

    instances.insert_unary(project=P, zone=Z, instance_resource=compute_v1.Instance(  # a plain instance, then stopped
        name="plain", machine_type=f"zones/{Z}/machineTypes/e2-small", network_interfaces=[compute_v1.NetworkInterface()],
        disks=[compute_v1.AttachedDisk(boot=True, initialize_params=compute_v1.AttachedDiskInitializeParams(source_image=f"projects/{P}/global/images/img"))]))
    (plain,) = (i for items in gce.store.values() for i in items.values() if i["name"] == "plain")
    plain["status"] = "TERMINATED"  # stopped: its disk, and its etcd data, may come back
    assert alive(P, Z, "plain") is None
    gce.faults.append(Fault("get", "instances", status=403))  # no compute.instances.get for this account
    assert alive(P, Z, "never-was") is None
    monkeypatch.setenv(METADATA_ENV, "http://127.0.0.1:9")  # no metadata server: unsure, never "gone"
    assert alive(P, Z, "never-was") is None
