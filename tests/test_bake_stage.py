"""Staging, content hash, image names, Packer argv and the apt mirror, as pure functions.

The hash must change when any input changes (a template, a script, a shipped file, a
variable, a version, the podmaster code in the local image) and only then.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import bakery
from bakery.bake import packer as pk
from bakery.bake import stage
from bakery.errors import BakeError
from bakery.spec import parse

V = (1, 6, 6)
MIRROR = "http://deb.debian.org/debian"


def _spec(extra: str = "", provider: str = "local") -> bakery.spec.ClusterSpec:
    section = f"{provider}: {{}}\n" if provider != "local" and f"\n{provider}:" not in f"\n{extra}" else ""
    return parse(f"name: demo\nprovider: {provider}\n{extra}{section}")


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    copy = tmp_path / "packer"
    shutil.copytree(stage.template_dir(), copy)
    return copy


def _hash(spec: bakery.spec.ClusterSpec, target: str, templates: Path, version: tuple[int, int, int] = V, mirror: str = MIRROR) -> str:
    return stage.recipe(spec, target, mirror, templates, version).hash


def test_hash_is_stable_for_the_same_inputs(templates: Path) -> None:
    assert _hash(_spec(), "local", templates) == _hash(_spec(), "local", templates)
    # Things that are not inputs of the image: the cluster's name, its size, the provider
    # section's VM sizes.
    other = parse("name: other\nprovider: local\nmasters: 5\nlocal:\n  memory_mb: 2048\n")
    assert _hash(other, "local", templates) == _hash(_spec(), "local", templates)


@pytest.mark.parametrize(
    "path",
    ["build.pkr.hcl", "variables.pkr.hcl", "local.pkr.hcl", "scripts/cleanup.sh", "scripts/local/rootfs.sh",
     "files/local/cloud/90-bakery.cfg", "files/local/systemd/bakery-etcd.service"],
)
def test_hash_changes_when_any_template_script_or_file_changes(templates: Path, path: str) -> None:
    before = _hash(_spec(), "local", templates)
    with (templates / path).open("a") as f:
        f.write("\n# changed\n")
    assert _hash(_spec(), "local", templates) != before


def test_hash_changes_when_a_script_becomes_executable_or_not(templates: Path) -> None:
    before = _hash(_spec(), "local", templates)
    (templates / "scripts" / "cleanup.sh").chmod(0o644)
    assert _hash(_spec(), "local", templates) != before


def test_hash_changes_with_each_variable_and_version(templates: Path) -> None:
    base = _hash(_spec(), "local", templates)
    assert _hash(_spec('kubernetes_version: "1.36.3"\n'), "local", templates) != base
    assert _hash(_spec('etcd_version: "3.7.3"\n'), "local", templates) != base
    assert _hash(_spec(), "local", templates, mirror="http://mirror.example/debian") != base
    assert _hash(_spec(), "local", templates, version=(1, 6, 7)) != base
    aws = _spec("aws:\n  region: eu-west-1\n", provider="aws")
    assert _hash(aws, "aws", templates) != _hash(_spec("aws:\n  region: us-east-1\n", provider="aws"), "aws", templates)
    images = _spec("images:\n  podmaster: ghcr.io/me/podmaster:0.2.0\n", provider="aws")
    assert _hash(images, "aws", templates) != _hash(_spec(provider="aws"), "aws", templates)


def test_the_local_image_hash_follows_its_binaries(templates: Path) -> None:
    one = stage.recipe(_spec(), "local", MIRROR, templates, V, {"etcd": "a" * 64})
    other = stage.recipe(_spec(), "local", MIRROR, templates, V, {"etcd": "b" * 64})
    assert one.variables["local_binaries"] == ["a" * 64 + "  etcd"] and one.hash != other.hash


def test_hash_follows_the_podmaster_code_shipped_in_the_local_image(templates: Path) -> None:
    rec = stage.recipe(_spec(), "local", MIRROR, templates, V)
    shipped = {p for p, _, _ in rec.files if p.startswith("files/bakery/")}
    assert {"files/bakery/podmaster.py", "files/bakery/etcd.py", "files/bakery/__init__.py"} <= shipped
    assert "files/bakery/cli.py" not in shipped  # editing the CLI does not rebuild the image
    # ...and a change in a shipped module changes the hash.
    package = Path(bakery.__file__).parent
    data = dict((p, d) for p, d, _ in rec.files)
    assert data["files/bakery/podmaster.py"] == (package / "podmaster.py").read_bytes()
    changed = [(p, d + b"#" if p == "files/bakery/podmaster.py" else d, m) for p, d, m in rec.files]
    assert stage.content_hash(changed, V) != rec.hash


def test_cloud_images_ship_bakery_node_as_the_local_image_does(templates: Path) -> None:
    local = stage.recipe(_spec(), "local", MIRROR, templates, V)
    for target in ("aws", "gcp"):
        rec = stage.recipe(_spec(provider=target), target, MIRROR, templates, V)
        shipped = sorted(p for p, _, _ in rec.files if p.startswith("files/bakery/"))
        assert shipped == sorted(p for p, _, _ in local.files if p.startswith("files/bakery/"))
        assert "files/bakery/node/main.py" in shipped and "files/bakery/store/s3.py" in shipped
        assert f"{stage.CLOUD_LIB}/.filled-by-lib.sh" in {p for p, _, _ in rec.files}
    build = (templates / "build.pkr.hcl").read_text()
    assert build.count("scripts/bakery.sh") == 1 and "scripts/lib.sh" in build  # one installer for every image
    assert "$SCRIPTS/bakery.sh" in (templates / "scripts/local/configure.sh").read_text()


def test_image_name_carries_version_and_hash_and_fits_gce() -> None:
    name = stage.image_name("v1.31.4", "0123456789abcdef" * 4)
    assert name == "bakery-k8s-1-31-4-0123456789ab"
    assert len(name) <= 63


def test_variables_file_is_hcl_with_template_sequences_escaped() -> None:
    text = stage.hcl_vars({"a": "x${y}", "b": ["p:1", "q%{z}"], "c": True})
    assert 'a = "x$${y}"' in text
    assert 'b = ["p:1", "q%%{z}"]' in text
    assert "c = true" in text


def test_cloud_variables_pin_the_control_plane_images() -> None:
    values = stage.variables(_spec(provider="gcp"), "gcp", MIRROR)
    assert values["control_plane_images"] == [
        "registry.k8s.io/etcd:3.7.4-0", "registry.k8s.io/kube-apiserver:v1.37.2",
        "registry.k8s.io/kube-scheduler:v1.37.2", "registry.k8s.io/kube-controller-manager:v1.37.2",
        "registry.k8s.io/pause:3.10", "ghcr.io/bakery-k8s/podmaster:0.1.0",
    ]


def test_mirror_from_deb822_and_one_line_sources() -> None:
    deb822 = (
        "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\nURIs: http://deb.debian.org/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n"
    )
    assert stage.debian_mirror({"debian.sources": deb822}) == "http://deb.debian.org/debian"
    one_line = "# comment\ndeb-src http://src.example/debian bookworm main\ndeb [arch=amd64] http://mirror.example/debian/ bookworm main\n"
    assert stage.debian_mirror({"sources.list": one_line}) == "http://mirror.example/debian"
    assert stage.debian_mirror({}) == stage.DEFAULT_MIRROR


def test_packer_argv_is_a_pure_function() -> None:
    folder = Path("/b/demo/packer/local")
    v = {"local_output_dir": "/b/out", "image_name": "n"}
    assert pk.validate_argv("packer", folder, "null.local", v) == [
        "packer", "validate", "-only=null.local", "-var=image_name=n", "-var=local_output_dir=/b/out", str(folder)]
    assert pk.build_argv("packer", folder, "null.local", v)[:5] == ["packer", "build", "-machine-readable", "-force", "-color=false"]
    assert pk.init_argv("packer", folder) == ["packer", "init", str(folder)]


def test_packer_version_parsing() -> None:
    assert pk.parse_version("Packer v1.6.6\n") == (1, 6, 6)
    assert pk.parse_version("Packer v1.11.2\n\nYour version of Packer is out of date!") == (1, 11, 2)
    assert not pk.supports_required_plugins((1, 6, 6))
    assert pk.supports_required_plugins((1, 7, 0))
    with pytest.raises(BakeError):
        pk.parse_version("command not found")
