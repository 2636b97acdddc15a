"""The -machine-readable parser against recorded Packer output.

null-ok.txt, null-failed.txt and local-ok.txt were recorded from Debian's Packer 1.6.6
on this machine (null-ok/failed from a two-line shell-local build; local-ok from a real
`bakery bake` of the local image, with debootstrap's per-package lines cut after six and
the paths shortened). amazon-ebs-ok.txt and googlecompute-ok.txt follow the same
format with the artifact lines those builders print; they were written by hand, because
no cloud build can run here.
"""

from __future__ import annotations

from pathlib import Path

from bakery.bake import machine
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "packer"


def _read(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_successful_null_build_has_its_artifact_and_no_errors() -> None:
    out = machine.parse(_read("null-ok.txt"))
    assert out.errors == {}
    # A script's stderr shows as `ui,error` even when the build succeeds: bakery reports
    # the per-build `error` lines first for that reason.
    assert out.error_lines == ["==> null.local: to stderr"]
    arts = out.artifacts_of("null.local")
    assert [a.index for a in arts] == [0, 1]  # the builder's, then the manifest post-processor's
    assert arts[0].builder_id == "fnoeding.null"
    assert arts[0].id == "Null"
    assert arts[0].string == "Did not export anything. This is the null builder"


def test_failed_build_yields_packers_error_lines_and_no_artifact() -> None:
    out = machine.parse(_read("null-failed.txt"))
    assert out.artifacts == []
    assert out.errors == {"null.local": ["Script exited with non-zero exit status: 3.Allowed exit codes are: [0]"]}
    assert "==> null.local: E: Failed getting release file" in out.error_lines


def test_escaped_commas_and_newlines_are_restored() -> None:
    line = machine.parse_line("1795780828,,ui,message,    null.local: hello%!(PACKER_COMMA) world\\nsecond")
    assert line is not None
    assert machine.ui_text(line) == "    null.local: hello, world\nsecond"


def test_plain_text_lines_are_not_machine_readable() -> None:
    assert machine.parse_line("Error: Failed to parse template") is None
    assert machine.parse_line("") is None


def test_amazon_artifact_gives_one_ami_per_region() -> None:
    out = machine.parse(_read("amazon-ebs-ok.txt"))
    art = out.artifacts_of("amazon-ebs.bakery")[0]
    assert machine.amis(art) == {"us-east-1": "ami-0a1b2c3d4e5f60718", "eu-west-1": "ami-0f1e2d3c4b5a69788"}


def test_googlecompute_artifact_id_is_the_image_name() -> None:
    art = machine.parse(_read("googlecompute-ok.txt")).artifacts_of("googlecompute.bakery")[0]
    assert art.builder_id == "packer.googlecompute"
    assert art.id == "bakery-k8s-1-31-4-0123456789ab"


def test_streaming_feed_matches_whole_parse() -> None:
    text = _read("local-ok.txt")
    p = machine.Parser()
    for raw in text.splitlines():
        p.feed(raw)
    assert p.output == machine.parse(text)
    assert p.output.artifacts_of("null.local")[0].id == "Null"
    assert any("rootfs: 623M" in ui for ui in p.output.ui_lines)
    # systemctl writes to stderr in a build that succeeds: `ui,error` lines, no `error` lines.
    assert p.output.errors == {}
    assert any("Removed \"/etc/systemd/system/multi-user.target.wants/etcd.service\"" in e for e in p.output.error_lines)


def test_file_artifacts_are_collected(tmp_path: Path) -> None:
    text = "\n".join([
        "1,qemu.local,artifact,0,builder-id,transcend.qemu",
        "1,qemu.local,artifact,0,id,VM",
        "1,qemu.local,artifact,0,files-count,1",
        "1,qemu.local,artifact,0,file,0,output/disk.qcow2",
        "1,qemu.local,artifact,0,end",
    ])
    assert machine.parse(text).artifacts_of("qemu.local")[0].files == ["output/disk.qcow2"]
