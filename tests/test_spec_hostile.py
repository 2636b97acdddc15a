"""Hostile cluster.yaml files (issue 12): each class the outside check found gets exit 2,
one line naming the key (or the file), no traceback and nothing written, through the
CLI's own main; the bombs and endless inputs also within 2 s of CPU and 200 MB of
address space in a subprocess; and a property test that mutates the examples.

The time and memory bound is a resource limit on a child process (RLIMIT_CPU, RLIMIT_AS):
pass or fail, not a timing assertion. hypothesis is in the dev extra and imported plainly:
when it is missing this module fails, it never skips.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bakery import cli, errors, grammar, spec, specfile

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = {p.stem: p.read_text() for p in sorted((REPO / "examples").glob("*.yaml"))}
AWS = EXAMPLES["aws"]
CPU_SECONDS = 2
ADDRESS_SPACE = 200 * 1024 * 1024


def run_main(*argv: str) -> tuple[int, str, str]:
    """bakery's main in this process, its stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of every file under `folder`: what a command wrote."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def aws_with(old: str, new: str) -> str:
    assert old in AWS, old
    return AWS.replace(old, new, 1)


def bomb(levels: int) -> str:
    lines = ['name: lol\nprovider: local\nl0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n")
    return "".join(lines)


ETCD = "etcd:\n  bootstrap: static\n"
ZONES = "  zones:\n    - {name: us-east-1a, subnet: 10.0.1.0/24}\n    - {name: us-east-1b, subnet: 10.0.2.0/24}\n    - {name: us-east-1c, subnet: 10.0.3.0/24}\n"

# class -> (spec text, the start of each expected line after "error: <file>:<line>: ")
HOSTILE: dict[str, tuple[str, list[str]]] = {
    "newline-dns-domain": (aws_with("  pod_cidr: 10.244.0.0/16\n", '  pod_cidr: 10.244.0.0/16\n  dns_domain: "cluster.local\\nauthorization:\\n  mode: AlwaysAllow"\n'),
                           ["network.dns_domain: the value contains the control or unprintable character U+000A"]),
    "newline-discovery-url": (aws_with(ETCD, 'etcd:\n  bootstrap: discovery\n  discovery_url: "https://discovery.etcd.io/abc\\nExecStartPre=touch pwned"\n'),
                              ["etcd.discovery_url: the value contains the control or unprintable character U+000A"]),
    "newline-extra-arg": (AWS + 'apiserver:\n  extra_args:\n    v: "2\\n    - --authorization-mode=AlwaysAllow"\n',
                          ["apiserver.extra_args.v: the value contains the control"]),
    "nul-escape": (aws_with("dns_name: api.prod-aws.example.com", 'dns_name: "api\\0.example.com"'),
                   ["load_balancer.dns_name: the value contains the control or unprintable character U+0000"]),
    "lone-surrogate-escape": (aws_with("dns_name: api.prod-aws.example.com", 'dns_name: "api\\ud800.example.com"'),
                              ["load_balancer.dns_name: the value contains the control or unprintable character U+D800"]),
    "billion-laughs": (bomb(9), ["YAML refused: the document expands to more than 10,000 nodes"]),
    "nine-level-mapping-bomb": ("name: x\nprovider: local\na0: &a0 {k: v}\n" + "".join(
        f"a{i}: &a{i} {{{', '.join(f'k{j}: *a{i - 1}' for j in range(9))}}}\n" for i in range(1, 10)),
        ["YAML refused: the document expands to more than 10,000 nodes"]),
    "recursive-alias": ("name: &n [*n]\nprovider: local\n", ["YAML refused: alias *n refers to a node that contains it"]),
    "recursive-merge": ("x-a: &a\n  <<: *a\nname: x\nprovider: local\n", ["YAML refused: alias *a refers to a node that contains it"]),
    "deep-flow": ("name: x\nprovider: local\nnetwork: " + "[" * 2000 + "]" * 2000 + "\n", ["YAML refused: nested deeper than 32 levels"]),
    "deep-block": ("name: x\nprovider: local\n" + "".join(" " * i + f"k{i}:\n" for i in range(200)), ["YAML refused: nested deeper than 32 levels"]),
    "subnet-garbage": (aws_with("{name: us-east-1a, subnet: 10.0.1.0/24}", "{name: us-east-1a, subnet: garbage}"),
                       ["aws.zones[0].subnet: 'garbage' is not an IPv4 network in CIDR form"]),
    "subnet-host-bits": (aws_with("{name: us-east-1a, subnet: 10.0.1.0/24}", "{name: us-east-1a, subnet: 10.0.1.5/24}"),
                         ["aws.zones[0].subnet: '10.0.1.5/24' has host bits set; the network is 10.0.1.0/24"]),
    "subnet-ipv6": (aws_with("{name: us-east-1a, subnet: 10.0.1.0/24}", "{name: us-east-1a, subnet: 'fd00::/64'}"),
                    ["aws.zones[0].subnet: 'fd00::/64' is IPv6"]),
    "subnet-prefix-33": (aws_with("{name: us-east-1a, subnet: 10.0.1.0/24}", "{name: us-east-1a, subnet: 10.0.1.0/33}"),
                         ["aws.zones[0].subnet: '10.0.1.0/33': the prefix length /33 is over /32"]),
    "non-ascii-dns-name": (aws_with("dns_name: api.prod-aws.example.com", "dns_name: api.bäckerei.example.com"),
                           ["load_balancer.dns_name: 'api.bäckerei.example.com' is not ASCII"]),
    "non-ascii-dns-domain": (aws_with("  pod_cidr: 10.244.0.0/16\n", "  pod_cidr: 10.244.0.0/16\n  dns_domain: clüster.local\n"),
                             ["network.dns_domain: 'clüster.local' is not ASCII"]),
    "invalid-dns-name": (aws_with("dns_name: api.prod-aws.example.com", "dns_name: -api..example.com"),
                         ["load_balancer.dns_name: '-api..example.com' is not a valid DNS name"]),
    "allowed-cidrs": (aws_with("allowed_cidrs: [10.0.0.0/8, 192.0.2.0/24]", 'allowed_cidrs: [banana, "::/0", 10.0.1.0/8]'),
                      ["load_balancer.allowed_cidrs[0]: 'banana' is not an IPv4 network",
                       "load_balancer.allowed_cidrs[1]: '::/0' is IPv6",
                       "load_balancer.allowed_cidrs[2]: '10.0.1.0/8' has host bits set"]),
    "allowed-cidrs-empty": (aws_with("allowed_cidrs: [10.0.0.0/8, 192.0.2.0/24]", "allowed_cidrs: []"),
                            ["load_balancer.allowed_cidrs: the list is empty"]),
    "service-cidr-overlaps-node-subnet": (aws_with("service_cidr: 10.96.0.0/12", "service_cidr: 10.0.0.0/16"),
                                          ["network.service_cidr: 10.0.0.0/16 overlaps the masters' subnet 10.0.0.0/16"]),
    "pod-cidr-overlaps-zone-subnet": (aws_with("pod_cidr: 10.244.0.0/16", "pod_cidr: 10.0.2.0/24"),
                                      ["network.pod_cidr: 10.0.2.0/24 overlaps the masters' subnet"]),
    "etcd-client-port-is-api-port": (aws_with(ETCD, ETCD + "  client_port: 6443\n"),
                                     ["etcd.client_port: port 6443 is already load_balancer.port"]),
    "etcd-ports-swapped": (aws_with(ETCD, ETCD + "  client_port: 2380\n  peer_port: 2379\n"),
                           ["etcd.client_port: client and peer ports are swapped"]),
    "etcd-peer-port-is-kubelet-port": (aws_with(ETCD, ETCD + "  peer_port: 10250\n"),
                                       ["etcd.peer_port: port 10250 is already the kubelet's API port"]),
    "duplicate-zones": (aws_with("{name: us-east-1b, subnet: 10.0.2.0/24}", "{name: us-east-1a, subnet: 10.0.2.0/24}"),
                        ["aws.zones[1].name: zone us-east-1a is listed twice"]),
    "empty-zones": (aws_with(ZONES, "  zones: []\n"), ["aws.zones: at least one zone is required"]),
    "zone-outside-region": (aws_with("{name: us-east-1c, subnet: 10.0.3.0/24}", "{name: eu-west-1c, subnet: 10.0.3.0/24}"),
                            ["aws.zones[2].name: zone eu-west-1c is not in region us-east-1"]),
    "registry-with-spaces": (aws_with("registry: registry.k8s.io", 'registry: "registry with spaces"'),
                             ["images.registry: 'registry with spaces' is not a registry"]),
    "registry-url": (aws_with("registry: registry.k8s.io", "registry: https://registry.k8s.io"),
                     ["images.registry: 'https://registry.k8s.io' is not a registry"]),
    "registry-empty": (aws_with("registry: registry.k8s.io", 'registry: ""'), ["images.registry: '' is not a registry"]),
    "image-ref-url": (aws_with("registry: registry.k8s.io", "registry: registry.k8s.io\n  etcd: https://quay.io/coreos/etcd:v3.5.17"),
                      ["images.etcd: 'https://quay.io/coreos/etcd:v3.5.17' is not an image reference"]),
    "image-ref-unpinned": (aws_with("registry: registry.k8s.io", "registry: registry.k8s.io\n  pause: registry.k8s.io/pause"),
                           ["images.pause: 'registry.k8s.io/pause' has neither a tag nor a digest"]),
    "image-ref-empty": (aws_with("registry: registry.k8s.io", "registry: registry.k8s.io\n  podmaster: ''"),
                        ["images.podmaster: '' is not an image reference"]),
    "discovery-url-not-a-url": (aws_with(ETCD, "etcd:\n  bootstrap: discovery\n  discovery_url: discovery.etcd.io/abc\n"),
                                ["etcd.discovery_url: 'discovery.etcd.io/abc' is not an http(s) URL"]),
    "discovery-url-other-scheme": (aws_with(ETCD, "etcd:\n  bootstrap: discovery\n  discovery_url: 'file:///etc/passwd'\n"),
                                   ["etcd.discovery_url: 'file:///etc/passwd' is not an http(s) URL"]),
    "etcd-quota-2-63": (aws_with(ETCD, ETCD + f"  quota_backend_bytes: {2**63}\n"),
                        [f"etcd.quota_backend_bytes: {2**63} is over 8589934592 (8 GiB)"]),
    "integer-of-5000-digits": (aws_with("masters: 3", "masters: " + "9" * 5000), ["YAML syntax error: integer of 5000 characters"]),
    "flag-name-with-dashes": (AWS + "scheduler:\n  extra_args:\n    --v: '2'\n", ["scheduler.extra_args.--v: '--v': write the flag name without leading dashes"]),
    "flag-name-grammar": (AWS + "scheduler:\n  extra_args:\n    'V=2 --x': '2'\n", ["scheduler.extra_args['V=2 --x']: 'V=2 --x' is not a flag name"]),
    "unhashable-key": (AWS + "? [a, b]\n: c\n", ["YAML syntax error: a key must be a plain string"]),
    "duplicate-key": (AWS + "masters: 5\n", ["YAML syntax error: duplicate key 'masters' (first on line 5)"]),
    "bad-timestamp": (aws_with("name: prod-aws", "name: 2001-02-30"), ["name: '2001-02-30' is not a valid name"]),
    "cloud-name-trailing-text": (aws_with("  instance_type: m6i.large", "  instance_type: m6i.large\n  instance_profile: \"ops'; touch /x\""),
                                 ["aws.instance_profile: \"ops'; touch /x\" is not an IAM/EC2 name"]),
    "unicode-digit-version": (aws_with('kubernetes_version: "1.37.2"', 'kubernetes_version: "1.٣7.2"'), ["kubernetes_version: '1.٣7.2' is not a version"]),
}

# Files that are not a spec at all: the message names the file (no line).
FILES: dict[str, tuple[Any, str]] = {
    "dev-zero": ("/dev/zero", "is a character device, not a regular file"),
    "dev-null": ("/dev/null", "is a character device, not a regular file"),
    "directory": ("DIR", "is a directory, not a regular file"),
    "fifo": ("FIFO", "is a FIFO, not a regular file"),
    "huge": (b"name: x\nprovider: local\n" + b"# padding\n" * 1_100_000, "is 11,000,024 bytes; a spec may be at most 262,144 bytes"),
    "non-utf8": (AWS.encode().replace(b"prod-aws\n", b"prod-\xff\xfe\n", 1), ":3: byte 176 (0xff) is not UTF-8 (invalid start byte)"),
    "encoded-surrogate": (AWS.encode().replace(b"prod-aws\n", b"prod-\xed\xa0\x80\n", 1), ":3: byte 176 (0xed) is not UTF-8"),
    "raw-nul": (AWS.encode().replace(b"prod-aws\n", b"prod-\x00\n", 1), "character U+0000 is not allowed in YAML"),
}


def _file_case(case: str, tmp_path: Path) -> str:
    what, _ = FILES[case]
    if isinstance(what, bytes):
        path = tmp_path / "cluster.yaml"
        path.write_bytes(what)
        return str(path)
    if what == "DIR":
        (tmp_path / "cluster.yaml").mkdir()
        return str(tmp_path / "cluster.yaml")
    if what == "FIFO":
        os.mkfifo(tmp_path / "cluster.yaml")  # nobody writes: a blocking open would hang
        return str(tmp_path / "cluster.yaml")
    return what


@pytest.mark.parametrize("command", ["render", "validate"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_each_hostile_class_exits_2_with_one_line_per_key_and_writes_nothing(case: str, command: str, tmp_path: Path) -> None:
    text, expected = HOSTILE[case]
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    build = tmp_path / "build"
    code, out, err = run_main(command, "-f", str(path), "-o", str(build))
    assert code == 2, err
    assert out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == len(expected), lines
    for line, want in zip(lines, expected, strict=True):
        head = f"error: {path}:"
        assert line.startswith(head), line
        assert re.sub(r"^[0-9]+: ", "", line[len(head):]).startswith(want), (line, want)
    assert not build.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["cluster.yaml"], "nothing may be written"


@pytest.mark.parametrize("command", ["render", "validate"])
@pytest.mark.parametrize("case", sorted(FILES))
def test_inputs_that_are_not_a_spec_file_exit_2_naming_the_file(case: str, command: str, tmp_path: Path) -> None:
    path = _file_case(case, tmp_path)
    build = tmp_path / "build"
    code, out, err = run_main(command, "-f", path, "-o", str(build))
    assert code == 2 and out == "" and "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith(f"error: {path}") and FILES[case][1] in line, line
    assert not build.exists()


BOUNDED = {
    "billion-laughs": bomb(9).encode(),
    "ten-level-bomb": bomb(10).encode(),
    "deep-flow": b"name: x\nprovider: local\nnetwork: " + b"[" * 200_000 + b"]" * 50_000 + b"\n",
    "huge": b"name: x\nprovider: local\n" + b"k: " + b"x" * 50_000_000 + b"\n",
    "many-unknown-keys": b"name: x\nprovider: local\n" + b"".join(b"key%d: 1\n" % i for i in range(25_000)),
}


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


@pytest.mark.parametrize("case", [*sorted(BOUNDED), "dev-zero", "fifo"])
def test_bombs_and_endless_inputs_stay_within_2s_of_cpu_and_200_mb(case: str, tmp_path: Path) -> None:
    """A child process killed at 2 s of CPU time or 200 MB of address space fails the test."""
    if case == "dev-zero":
        path = "/dev/zero"
    elif case == "fifo":
        path = str(tmp_path / "cluster.yaml")
        os.mkfifo(path)
    else:
        path = str(tmp_path / "cluster.yaml")
        Path(path).write_bytes(BOUNDED[case])
    for command in ("render", "validate"):
        r = subprocess.run([sys.executable, "-m", "bakery.cli", command, "-f", path, "-o", str(tmp_path / "build")],
                           capture_output=True, text=True, preexec_fn=_limits, timeout=60, check=False)
        assert r.returncode == 2, (r.returncode, r.stderr[-500:])  # -SIGXCPU or MemoryError would be something else
        assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) <= spec.MAX_PROBLEMS + 1
        assert r.stderr.startswith(f"error: {path}")
        assert not (tmp_path / "build").exists()


def test_error_lines_are_capped_with_a_count_of_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(AWS + "".join(f"unknown{i}: 1\n" for i in range(500)))
    code, _, err = run_main("validate", "-f", str(path), "-o", str(tmp_path / "build"))
    lines = err.splitlines()
    assert code == 2 and len(lines) == spec.MAX_PROBLEMS + 1
    assert lines[-1] == f"error: {path}: ... and {500 - spec.MAX_PROBLEMS} more problem(s)"


def test_yaml_merge_keys_work_and_x_keys_hold_anchors(tmp_path: Path) -> None:
    text = aws_with(ETCD, "x-etcd: &etcd\n  bootstrap: static\n  client_port: 2379\netcd:\n  <<: *etcd\n  peer_port: 2380\n")
    text = text.replace("    - {name: us-east-1b, subnet: 10.0.2.0/24}", "    - {<<: *zone, name: us-east-1b, subnet: 10.0.2.0/24}")
    text = text.replace("    - {name: us-east-1a, subnet: 10.0.1.0/24}", "    - &zone {name: us-east-1a, subnet: 10.0.1.0/24}")
    parsed = spec.parse(text)
    assert (parsed.etcd.bootstrap, parsed.etcd.client_port, parsed.etcd.peer_port) == ("static", 2379, 2380)
    assert [z.name for z in parsed.zones] == ["us-east-1a", "us-east-1b", "us-east-1c"]
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    code, _out, err = run_main("validate", "-f", str(path), "-o", str(tmp_path / "build"))
    assert code == 0, err
    # a key given twice in one mapping is still refused; a merged key the mapping overrides is not
    with pytest.raises(spec.SpecError, match="duplicate key 'peer_port'"):
        spec.parse(text.replace("  peer_port: 2380\n", "  peer_port: 2380\n  peer_port: 2381\n"))


def test_extra_args_that_undo_a_hardening_are_refused_unless_overridden_then_warn(tmp_path: Path) -> None:
    args = ("apiserver:\n  extra_args:\n    authorization-mode: AlwaysAllow\n    anonymous-auth: 'true'\n"
            "    profiling: 'true'\n    tls-cert-file: /etc/shadow\n")
    path = tmp_path / "cluster.yaml"
    path.write_text(AWS + args)
    code, _out, err = run_main("validate", "-f", str(path), "-o", str(tmp_path / "build"))
    assert code == 2, err
    keys = [line.split(": ", 3)[2] for line in err.splitlines()]
    assert keys == ["apiserver.extra_args.authorization-mode", "apiserver.extra_args.anonymous-auth",
                    "apiserver.extra_args.profiling", "apiserver.extra_args.tls-cert-file"], err
    assert "apiserver.hardening_overrides: [anonymous-auth]" in err and "/etc/shadow" in err
    path.write_text(AWS + args + "  hardening_overrides: [authorization-mode, anonymous-auth, profiling, tls-cert-file]\n")
    for _ in range(2):  # every run warns
        code, _out, err = run_main("validate", "-f", str(path), "-o", str(tmp_path / "build"))
        assert code == 0, err
        warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
        assert [w.split(": ", 3)[2] for w in warnings] == keys
        assert all("overridden on purpose" in w for w in warnings)
    path.write_text(AWS + "apiserver:\n  hardening_overrides: [profiling]\n")
    code, _out, err = run_main("validate", "-f", str(path), "-o", str(tmp_path / "build"))
    assert code == 2 and "apiserver.hardening_overrides[0]: profiling is listed" in err, err
    assert spec.parse(AWS).warnings == ()


def test_reading_refuses_a_fifo_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "f")
    with pytest.raises(spec.SpecError, match="is a FIFO"):
        specfile.read(tmp_path / "f")


# -- the property test: mutated examples ----------------------------------------------


HOSTILE_VALUES = st.one_of(
    st.sampled_from([
        "", " ", "garbage", "10.0.1.5/24", "fd00::/64", "10.0.0.0/33", "::/0", "0.0.0.0/0", "registry with spaces",
        "https://registry.k8s.io", "cluster.local\nauthorization:\n  mode: AlwaysAllow", "x\nExecStartPre=touch /pwned",
        "bäckerei.example", "\ud800", "a\x00b", "-", "*", "&", "!!python/object", "${HOME}", "%n", "'\"", "v1.31.4",
        "AlwaysAllow", "true", "a" * 300, "10.0.1.0/24", "us-east-1a", "https://discovery.etcd.io/abc",
    ]),
    st.integers(min_value=-(2**64), max_value=2**64), st.booleans(), st.none(), st.floats(allow_nan=True),
    st.text(max_size=20), st.lists(st.text(max_size=5), max_size=3), st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
)


def _paths(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path] if path else []
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, (*path, i))
    return out


def _set(data: Any, path: tuple[Any, ...], value: Any, delete: bool) -> None:
    for p in path[:-1]:
        data = data[p]
    if delete and isinstance(data, dict):
        del data[path[-1]]
    else:
        data[path[-1]] = value


@st.composite
def mutated_specs(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(sorted(EXAMPLES)))
    text = EXAMPLES[name]
    kind = draw(st.sampled_from(["value", "value", "value", "key", "delete", "bytes", "truncate"]))
    if kind in ("bytes", "truncate"):
        raw = text.encode()
        at = draw(st.integers(0, len(raw)))
        if kind == "truncate":
            return raw[:at]
        return raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]
    data = yaml.safe_load(text)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        if kind == "key":
            parent = path[:-1]
            target = data
            for p in parent:
                target = target[p]
            if isinstance(target, dict):
                target[draw(st.sampled_from(["extra_args", "zones", "subnet", "x-any", "masers", "client_port", "\nk"]))] = draw(HOSTILE_VALUES)
            continue
        _set(data, path, draw(HOSTILE_VALUES), delete=kind == "delete")
    return yaml.safe_dump(data, allow_unicode=draw(st.booleans())).encode("utf-8", "surrogatepass")


@settings(max_examples=int(os.environ.get("BAKERY_FUZZ_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(mutated_specs())
def test_mutated_examples_exit_0_or_2_without_traceback_and_write_nothing_on_2(raw: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="bakery-fuzz-") as tmp:
        path = Path(tmp) / "cluster.yaml"
        path.write_bytes(raw)
        build = Path(tmp) / "build"
        for command in ("render", "validate"):
            before = tree(build)
            code, _, err = run_main(command, "-f", str(path), "-o", str(build))  # an exception here fails the test
            assert code in (0, 2), err
            assert "Traceback" not in err
            if code == 2:
                assert tree(build) == before, f"{command} exited 2 but wrote: {err}"
                assert all(line.startswith(("error: ", "warning: ", "not checked: ")) for line in err.splitlines()), err


# -- the generated family (issue 23): every numeric and every CIDR key of the model ----------
#
# The keys come from the pydantic model itself, so a key added later is covered without
# editing this list. A value is written into the example of the key's provider (aws for the
# shared sections) as raw YAML text, so that `yes` stays YAML 1.1's boolean.

RAW = "__hostile_value__"


def _inner_types(annotation: Any) -> list[Any]:
    """The types inside Optional[...], list[...] and X | Y (Annotated kept as it is)."""
    args = getattr(annotation, "__args__", None)
    if args is None or getattr(annotation, "__metadata__", None) is not None:
        return [annotation]
    return [t for a in args for t in _inner_types(a)]


def _model_keys(model: type[Any], path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """(path, field type) of every leaf of `model`; a list of models or of values is entered at [0]."""
    out: list[tuple[tuple[Any, ...], Any]] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        in_list = getattr(ann, "__origin__", None) is list or any(getattr(t, "__origin__", None) is list for t in _inner_types(ann))
        here = (*path, name, 0) if in_list else (*path, name)
        types = [t for t in _inner_types(ann) if t is not type(None)]
        models = [t for t in types if isinstance(t, type) and issubclass(t, spec.BaseModel)]
        if models:
            out += _model_keys(models[0], here)
        else:
            out.append((here, (field, types)))
    return out


def _is_number(field_types: Any) -> bool:
    field, types = field_types
    return any(t is int for t in types) or field.annotation is int


def _is_cidr(field_types: Any) -> bool:
    """A field checked by grammar.cidr: on the field itself (pydantic moves a bare Annotated's
    metadata there) or inside Optional[...] / list[...]."""
    field, types = field_types
    metadata = [*field.metadata, *(m for t in types for m in getattr(t, "__metadata__", ()))]
    return any(getattr(m, "func", None) is grammar.cidr for m in metadata)


MODEL_KEYS = _model_keys(spec.ClusterSpec)
NUMERIC_KEYS = sorted(p for p, ft in MODEL_KEYS if _is_number(ft))
CIDR_KEYS = sorted(p for p, ft in MODEL_KEYS if _is_cidr(ft))
NUMBER_FORMS = {"boolean": "yes", "string": '"5"', "float": "5.0"}
CIDR_FORMS = {"too-small": "10.0.0.0/31", "multicast": "224.0.0.0/4", "link-local": "169.254.0.0/24", "reserved": "240.0.0.0/4"}
# A range where any address is right by definition: who may reach the API (a /32 is one client).
SOURCE_RANGES = {("load_balancer", "allowed_cidrs", 0)}
# Local masters share one machine, where link-local addresses work (spec.SUBNET_REFUSED says
# why); on the clouds a link-local subnet is refused.
ACCEPTED = {(("local", "zones", 0, "subnet"), "link-local")}


def _default_of(path: tuple[Any, ...]) -> Any:
    """What the model takes for the key at `path` when the spec leaves it out, as YAML data
    (a zone list the example omits gets the model's own default zones, names included)."""
    model: Any = spec.ClusterSpec
    for p in path[:-1]:
        if isinstance(p, int):
            continue
        types = [t for t in _inner_types(model.model_fields[p].annotation) if isinstance(t, type) and issubclass(t, spec.BaseModel)]
        model = types[0]
    value = model.model_fields[path[-1]].get_default(call_default_factory=True)
    if isinstance(value, list):
        return [v.model_dump(exclude_none=True) if isinstance(v, spec.BaseModel) else v for v in value]
    return value.model_dump(exclude_none=True) if isinstance(value, spec.BaseModel) else ({} if value is None else value)


def _spec_with(path: tuple[Any, ...], raw: str) -> str:
    provider = path[0] if path[0] in ("aws", "gcp", "local") else "aws"
    data = yaml.safe_load(EXAMPLES[provider])
    target = data
    for depth, (p, nxt) in enumerate(itertools.pairwise(path), start=1):
        if isinstance(target, list):
            target = target[p]
            continue
        if target.get(p) is None or (isinstance(nxt, int) and not target[p]):
            target[p] = _default_of(path[:depth])
        target = target[p]
    if isinstance(target, list) and len(target) <= path[-1]:
        target.append(RAW)
    else:
        target[path[-1]] = RAW
    text = yaml.safe_dump(data, sort_keys=False)
    assert text.count(RAW) == 1, text
    return text.replace(RAW, raw)


def _dotted_key(path: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))


GENERATED = {f"{_dotted_key(p)}={form}": (p, raw) for p in NUMERIC_KEYS for form, raw in NUMBER_FORMS.items()}
GENERATED |= {f"{_dotted_key(p)}={form}": (p, raw) for p in CIDR_KEYS for form, raw in CIDR_FORMS.items()
              if not (p in SOURCE_RANGES and form == "too-small") and (p, form) not in ACCEPTED}


def test_the_generated_family_covers_the_keys_issue_23_names() -> None:
    """The model walk finds what the issue lists (a walk that found nothing would pass everything)."""
    numeric = {_dotted_key(p) for p in NUMERIC_KEYS}
    assert {"masters", "load_balancer.port", "etcd.client_port", "etcd.peer_port", "network.first_host", "local.cpus"} <= numeric
    assert {"network.subnet", "network.service_cidr", "network.pod_cidr", "aws.zones[0].subnet"} <= {_dotted_key(p) for p in CIDR_KEYS}


@pytest.mark.parametrize("case", sorted(GENERATED))
def test_generated_hostile_value_exits_2_naming_the_key_and_writes_nothing(case: str, tmp_path: Path) -> None:
    path_in_spec, raw = GENERATED[case]
    path = tmp_path / "cluster.yaml"
    path.write_text(_spec_with(path_in_spec, raw))
    build = tmp_path / "build"
    for command in ("render", "validate"):
        code, out, err = run_main(command, "-f", str(path), "-o", str(build))
        assert code == errors.SpecError.exit_code, (command, code, err)
        assert out == "" and "Traceback" not in err
        assert all(line.startswith("error: ") for line in err.splitlines()), err
        key = _dotted_key(path_in_spec)
        assert any(f": {key}: " in line and raw.strip('"') in line for line in err.splitlines()), (key, err)
        assert not build.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["cluster.yaml"]


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_what_the_generated_family_leaves_out_is_accepted_on_purpose(case: tuple[Any, str]) -> None:
    path_in_spec, form = case
    spec.parse(_spec_with(path_in_spec, CIDR_FORMS[form]))
