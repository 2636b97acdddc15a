"""Packer's `-machine-readable` output, one line at a time, into values.

Each line is `timestamp,target,type,data...`; commas inside data are written as
`%!(PACKER_COMMA)` and newlines as a literal `\\n`. bakery reads three kinds: `ui` lines
(progress and Packer's own error text), `artifact` lines (what a build produced) and
`error` lines (why a build failed). Everything else is kept out of the way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

COMMA = "%!(PACKER_COMMA)"


@dataclass(frozen=True)
class Line:
    timestamp: int
    target: str
    type: str
    data: tuple[str, ...]


@dataclass
class Artifact:
    """One artifact of one build, as Packer printed it."""

    build: str
    index: int
    builder_id: str = ""
    id: str = ""
    string: str = ""
    files: list[str] = field(default_factory=list)


@dataclass
class Output:
    """Everything bakery needs from one `packer build -machine-readable` run."""

    artifacts: list[Artifact] = field(default_factory=list)
    errors: dict[str, list[str]] = field(default_factory=dict)  # build name -> Packer's messages
    error_lines: list[str] = field(default_factory=list)  # `ui,error` text, in order
    ui_lines: list[str] = field(default_factory=list)  # every `ui` text (say, message, error), in order

    def artifacts_of(self, build: str) -> list[Artifact]:
        return [a for a in self.artifacts if a.build == build]


def unescape(text: str) -> str:
    return text.replace(COMMA, ",").replace("\\n", "\n").replace("\\r", "\r")


def parse_line(raw: str) -> Line | None:
    """One machine-readable line, or None for anything else (plain text on stderr)."""
    parts = raw.rstrip("\r\n").split(",")
    if len(parts) < 3 or not parts[0].isdigit():
        return None
    return Line(int(parts[0]), parts[1], parts[2], tuple(unescape(p) for p in parts[3:]))


class Parser:
    """Feed lines as they arrive (`feed`), read `output` when Packer has exited."""

    def __init__(self) -> None:
        self.output = Output()
        self._open: dict[tuple[str, int], Artifact] = {}

    def feed(self, raw: str) -> Line | None:
        line = parse_line(raw)
        if line is None:
            return None
        if line.type == "artifact" and len(line.data) >= 2:
            self._artifact(line)
        elif line.type == "error" and line.data:
            self.output.errors.setdefault(line.target, []).append(line.data[0])
        elif line.type == "ui" and len(line.data) >= 2:
            self.output.ui_lines.append(line.data[1])
            if line.data[0] == "error":
                self.output.error_lines.append(line.data[1].strip())
        return line

    def _artifact(self, line: Line) -> None:
        index, key, values = int(line.data[0]), line.data[1], line.data[2:]
        slot = (line.target, index)
        art = self._open.get(slot)
        if art is None:
            art = self._open[slot] = Artifact(line.target, index)
        if key == "builder-id":
            art.builder_id = values[0]
        elif key == "id":
            art.id = values[0]
        elif key == "string":
            art.string = values[0]
        elif key == "file" and len(values) >= 2:
            art.files.append(values[1])
        elif key == "end":
            self.output.artifacts.append(self._open.pop(slot))


def parse(text: str) -> Output:
    """A whole recorded output at once (tests, fixtures)."""
    p = Parser()
    for raw in text.splitlines():
        p.feed(raw)
    return p.output


def ui_text(line: Line) -> str | None:
    """The human text of a `ui` line (say/message/error), or None."""
    if line.type == "ui" and len(line.data) >= 2:
        return line.data[1]
    return None


def amis(artifact: Artifact) -> dict[str, str]:
    """amazon-ebs artifact id `us-east-1:ami-1,eu-west-1:ami-2` -> {region: ami}."""
    out: dict[str, str] = {}
    for part in artifact.id.split(","):
        region, _, ami = part.partition(":")
        if region and ami:
            out[region.strip()] = ami.strip()
    return out
