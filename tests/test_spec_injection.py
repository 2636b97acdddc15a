"""No string from the spec can add a line or a key to a rendered file (issue 12).

Two layers, each tested for every string field of the spec:
- the spec refuses a value carrying a newline (`\\nkey: x`, `\\nExecStartPre=...`) and
  names the key;
- the renderers quote or refuse on their own: with the spec's checks bypassed
  (model_copy does not validate), a payload in any field either makes the render fail
  with a BakeryError or leaves every rendered file with the same lines, keys and
  argument lists as before.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from bakery import pipeline, spec, state
from bakery.errors import BakeryError, SpecError

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((REPO / "examples").glob("*.yaml"))}
PAYLOAD = "x\ninjected: x\nExecStartPre=/bin/touch /pwned\n    - --injected=true"
KEY = "<key>"  # a path part standing for "the key of this dict entry"


def _walk(ann: Any, path: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    origin, args = get_origin(ann), get_args(ann)
    if ann is str:
        yield path
    elif origin is Annotated:
        yield from _walk(args[0], path)
    elif origin in (Union, types.UnionType):
        for a in args:
            if a is not type(None):
                yield from _walk(a, path)
    elif origin is list:
        yield from _walk(args[0], (*path, 0))
    elif origin is dict:
        yield (*path, KEY)
        yield from _walk(args[1], (*path, "k"))
    elif origin is Literal:
        return
    elif isinstance(ann, type) and issubclass(ann, BaseModel):
        for name, field in ann.model_fields.items():
            yield from _walk(field.annotation, (*path, name))


STRING_FIELDS = sorted(set(_walk(spec.ClusterSpec, ())), key=str)


def _example_for(path: tuple[Any, ...]) -> str:
    return path[0] if path[0] in ("aws", "gcp", "local") else "aws"


def _inject(data: Any, path: tuple[Any, ...], value: str) -> Any:
    """A copy of `data` with `value` at `path` (containers made as needed)."""
    head, rest = path[0], path[1:]
    if head == KEY:
        return {value: "x"}
    if isinstance(head, int):
        items = list(data) if isinstance(data, list) and data else [{} if rest and rest[0] not in (KEY,) and not isinstance(rest[0], int) else None]
        items[0] = _inject(items[0], rest, value) if rest else value
        return items
    if rest and rest[0] == KEY:
        return {**(data or {}), head: {value: "x"}}
    out = dict(data or {})
    out[head] = _inject(out.get(head), rest, value) if rest else value
    return out


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        if p == KEY:
            break
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def test_every_string_field_is_enumerated() -> None:
    names = {_dotted(p) for p in STRING_FIELDS}
    assert {"name", "network.dns_domain", "etcd.discovery_url", "images.registry", "apiserver.extra_args",
            "aws.zones[0].name", "gcp.service_account", "load_balancer.dns_name", "load_balancer.allowed_cidrs[0]"} <= names
    assert len(STRING_FIELDS) > 40


@pytest.mark.parametrize("path", STRING_FIELDS, ids=lambda p: ".".join(map(str, p)))
def test_the_spec_refuses_a_newline_in_every_string_field_naming_the_key(path: tuple[Any, ...]) -> None:
    data = _inject(EXAMPLES[_example_for(path)], path, PAYLOAD)
    with pytest.raises(SpecError) as e:
        spec.parse(yaml.safe_dump(data), "cluster.yaml")
    lines = e.value.lines()
    assert any(f": {_dotted(path)}" in line and "U+000A" in line for line in lines), lines


# -- the renderers, with the spec's checks bypassed -----------------------------------


def _copy_with(model: BaseModel, path: tuple[Any, ...], value: str) -> BaseModel:
    """model_copy all the way down: no validation runs, so the payload gets through."""
    head, rest = path[0], path[1:]
    current = getattr(model, head)
    if rest and rest[0] == KEY:
        new: Any = {**current, value: "x"}
    elif rest and rest[0] == "k":
        new = {**current, "v": value}
    elif rest and isinstance(rest[0], int):
        items = list(current)
        if not items:
            return model  # an empty list: nothing of it is rendered
        items[0] = value if len(rest) == 1 else _copy_with(items[0], rest[1:], value)
        new = items
    elif rest:
        if current is None:
            return model  # an absent section is not rendered
        new = _copy_with(current, rest, value)
    else:
        new = value
    return model.model_copy(update={head: new})


def _shape(name: str, content: bytes) -> Any:
    """What a payload must not change: a YAML file's keys and list lengths, else its line
    count and (systemd units, environment files) the names before each '='."""
    if name.endswith((".crt", ".key", ".pub", ".pem")):
        return "pem"  # certificates carry names in their SANs; PEM is not a line format anyone parses by line
    text = content.decode()
    if name.endswith((".yaml", ".manifest", ".conf", "user-data")):
        def keys(x: Any) -> Any:
            if isinstance(x, dict):
                return {k: keys(v) for k, v in x.items()}
            if isinstance(x, list):
                return [keys(v) if isinstance(v, dict | list) else "." for v in x]
            return "."
        return keys(list(yaml.safe_load_all(text))), len(text.splitlines())
    return len(text.splitlines()), [line.split("=", 1)[0] for line in text.splitlines() if "=" in line and not line.startswith("#")]


def _render_shapes(s: spec.ClusterSpec, build: Path, keep_pki: bool = False) -> dict[str, Any]:
    cluster = pipeline.Cluster(s, state.paths("injection", build), {"discovery": {"url": "https://discovery.etcd.io/abc"}})
    rendered = cluster.render(keep_pki=keep_pki)
    shapes = {}
    for i, r in enumerate(rendered.nodes.values()):  # by index: the cluster name is in the node names
        shapes[f"{i}:user-data"] = _shape("user-data", r.document)[0]  # its line count follows the PEM inside
        for f in r.files:
            shapes[f"{i}:{f.path}"] = _shape(f.path, f.content)
    return shapes


@pytest.fixture(scope="module")
def pki_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PKI per example for the whole module: renders reuse its CAs and certificates."""
    return tmp_path_factory.mktemp("injection")


_BEFORE: dict[str, dict[str, Any]] = {}


# Bases that between them render every template: AWS (static pods, builtin election) and
# local (systemd units, podmaster) with discovery bootstrap, so the URL reaches a unit; v2
# discovery is gone from etcd 3.7, so that base pins Kubernetes 1.36 and its etcd 3.6.
BASES = {"aws": EXAMPLES["aws"], "gcp": EXAMPLES["gcp"],
         "local": {**EXAMPLES["local"], "kubernetes_version": "1.36.3", "etcd_version": "",
                   "etcd": {"bootstrap": "discovery", "discovery_url": "https://discovery.etcd.io/abc"}}}
CASES = [(b, p) for p in STRING_FIELDS for b in ([p[0]] if p[0] in BASES else ["aws", "local"])]


@pytest.mark.parametrize(("example", "path"), CASES, ids=lambda c: c if isinstance(c, str) else ".".join(map(str, c)))
def test_a_payload_past_the_spec_adds_no_line_or_key_to_any_rendered_file(example: str, path: tuple[Any, ...], pki_root: Path) -> None:
    base = spec.parse(yaml.safe_dump(BASES[example]))
    if base.etcd.bootstrap == "discovery" and path[:2] != ("etcd", "discovery_url"):
        base = _copy_with(base, ("etcd", "discovery_url"), "https://discovery.etcd.io/abc")  # type: ignore[assignment]
    build = pki_root / example
    # a new dict entry (an extra flag) is one more argument: compare with a plain one
    dict_entry = KEY in path or "k" in path
    if dict_entry:
        before = _render_shapes(_copy_with(base, path, "plain"), build, keep_pki=True)  # type: ignore[arg-type]
    else:
        if example not in _BEFORE:
            _BEFORE[example] = _render_shapes(base, build, keep_pki=True)
        before = _BEFORE[example]
    hostile = _copy_with(base, path, PAYLOAD)
    try:
        after = _render_shapes(hostile, build)  # type: ignore[arg-type]  # same CAs and certificates
    except (BakeryError, ValueError):
        return  # refused by a renderer (or, for an address, by ipaddress): nothing rendered
    assert after.keys() == before.keys()
    changed = [k for k in before if before[k] != after[k]]
    assert changed == [], changed
