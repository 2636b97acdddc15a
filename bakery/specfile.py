"""Reading cluster.yaml with bounds: a size cap, regular files only, strict UTF-8, and a
YAML loader that counts before it builds.

`read(path)` refuses FIFOs, devices and directories without opening them for a blocking
read, and reads at most MAX_BYTES. `compose(text, filename)` parses with a SafeLoader
whose composer caps nesting depth (MAX_DEPTH) and the number of nodes the document
would have with every alias expanded (MAX_NODES), and refuses a recursive alias, all
before any Python object is built: a billion-laughs file costs a few kilobytes, not
gigabytes. Merge keys (`<<: *defaults`) work; duplicate keys are refused. Every failure
is a SpecError with one line naming the file and, where known, the line.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bakery.errors import Problem, SpecError

MAX_BYTES = 256 * 1024  # a three-provider spec with comments is under 4 KB
MAX_DEPTH = 32  # the spec's own nesting is 4 deep
MAX_NODES = 10_000  # nodes after alias expansion; a full spec has about 150
MAX_INT_DIGITS = 30  # bigger than any port, size or count in a spec

MERGE_TAG = "tag:yaml.org,2002:merge"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _refuse(file: str, message: str, line: int | None = None) -> SpecError:
    return SpecError(f"{file}: {message}", [Problem(message, file, line)])


def read(path: str | Path) -> str:
    """The file's text: a regular file of at most MAX_BYTES bytes of UTF-8."""
    name = str(path)
    try:
        st = os.stat(name)
    except FileNotFoundError:
        raise _refuse(name, "no such file (bakery init --provider local -f cluster.yaml writes one)") from None
    except OSError as e:
        raise _refuse(name, f"cannot read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(name, f"is a {_kind(st.st_mode)}, not a regular file; give the path of a cluster.yaml file")
    if st.st_size > MAX_BYTES:
        raise _refuse(name, f"is {st.st_size:,} bytes; a spec may be at most {MAX_BYTES:,} bytes")
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO since the stat, open does not wait for a writer.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise _refuse(name, f"cannot read: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _refuse(name, "is not a regular file; give the path of a cluster.yaml file")
        chunks, size = [], 0
        while size <= MAX_BYTES:
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise _refuse(name, f"cannot read: {e.strerror}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_BYTES:
        raise _refuse(name, f"is over {MAX_BYTES:,} bytes; a spec may be at most {MAX_BYTES:,} bytes")
    return decode(data, name)


def decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise _refuse(name, f"byte {e.start} (0x{data[e.start]:02x}) is not UTF-8 ({e.reason}); save the file as UTF-8", line) from None


# -- the bounded YAML loader ---------------------------------------------------------


class _Refused(yaml.composer.ComposerError):
    """Valid YAML that bakery will not build: too deep, too big, or recursive."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts nodes (aliases expanded) and depth while composing, refuses
    recursive aliases and duplicate keys, and keeps YAML 1.1 timestamps as strings."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0
        self._sizes: dict[int, int] = {}  # id(node) -> its size with aliases expanded, once composed

    def _count(self, n: int, mark: yaml.Mark) -> None:
        self._expanded += n
        if self._expanded > MAX_NODES:
            raise _Refused(
                None, None, f"the document expands to more than {MAX_NODES:,} nodes (aliases count each time they are used)", mark)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:
                if id(target) not in self._sizes:
                    raise _Refused(None, None, f"alias *{event.anchor} refers to a node that contains it (a recursive alias)", event.start_mark)
                self._count(self._sizes[id(target)], event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        before = self._expanded
        self._count(1, event.start_mark)
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._sizes[id(node)] = self._expanded - before
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for k, _ in node.value:
                if k.tag == MERGE_TAG:
                    continue
                if not isinstance(k, yaml.ScalarNode):
                    raise yaml.constructor.ConstructorError(None, None, "a key must be a plain string, not a list or mapping", k.start_mark)
                if k.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {k.value!r} (first on line {seen[k.value]})", k.start_mark)
                seen[k.value] = k.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > MAX_INT_DIGITS:
            raise yaml.constructor.ConstructorError(None, None, f"integer of {len(node.value)} characters; at most {MAX_INT_DIGITS}", node.start_mark)
        return super().construct_yaml_int(node)

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> str:  # type: ignore[override]
        return str(self.construct_scalar(node))


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)
_BoundedLoader.add_constructor("tag:yaml.org,2002:timestamp", _BoundedLoader.construct_yaml_timestamp)
_BoundedLoader.add_constructor("tag:yaml.org,2002:map", _BoundedLoader.construct_yaml_map)


@dataclass
class Document:
    data: Any
    lines: LineMap


def compose(text: str, filename: str) -> Document:
    """Parse `text` into Python data and a line map, within the bounds above."""
    if len(text) > MAX_BYTES:
        raise _refuse(filename, f"is {len(text):,} characters; a spec may be at most {MAX_BYTES:,} bytes")
    loader = None
    try:
        loader = _BoundedLoader(text)  # its reader refuses unprintable characters at once
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except _Refused as e:
        raise _refuse(filename, f"YAML refused: {e.problem}", e.problem_mark.line + 1 if e.problem_mark else None) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        msg = " ".join(filter(None, [e.context, e.problem])) or "invalid YAML"
        raise _refuse(filename, f"YAML syntax error: {_one_line(msg)}", mark.line + 1 if mark else None) from None
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        char = f"U+{e.character:04X}" if isinstance(e.character, int) else repr(e.character)
        raise _refuse(filename, f"character {char} is not allowed in YAML ({e.reason})", line) from None
    except yaml.YAMLError as e:
        raise _refuse(filename, f"YAML error: {_one_line(str(e))}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return Document(data, LineMap(node, text))


def _one_line(text: str) -> str:
    return " ".join(text.split())


class LineMap:
    """Maps a key path ('network', 'addresses', 1) to the line where YAML had it, and a
    scalar's path to its text as written (`yes`, `"3"`, `3.0`) and the tag YAML resolved
    it to, so that an error can show what the user wrote and which YAML rule read it."""

    def __init__(self, node: yaml.Node | None, text: str = "") -> None:
        self.lines: dict[tuple[Any, ...], int] = {}
        self._text = text
        self._scalars: dict[tuple[Any, ...], tuple[int, int, str]] = {}  # path -> (start, end, tag)
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, path: tuple[Any, ...]) -> None:
        if path in self.lines and len(path) > 0:
            return  # an alias used twice: the first place is the one to name
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            self._scalars[path] = (node.start_mark.index, node.end_mark.index, node.tag)
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if not isinstance(k, yaml.ScalarNode):
                    continue
                key = (*path, k.value)
                self._walk(v, key)
                self.lines[key] = k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                self._walk(v, (*path, i))

    @staticmethod
    def _key(path: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(str(p) if not isinstance(p, int) else p for p in path)

    def line(self, path: tuple[Any, ...]) -> int | None:
        path = self._key(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def written(self, path: tuple[Any, ...]) -> str | None:
        """The scalar at `path` exactly as the file has it (quotes included), or None when
        the path holds no scalar of this file (a default, a merged key, a list)."""
        found = self._scalars.get(self._key(path))
        if found is None or not self._text:
            return None
        start, end, _ = found
        return self._text[start:end]

    def scalars(self, tag: str) -> list[tuple[tuple[Any, ...], str]]:
        """(path, text as written) of every scalar YAML resolved to `tag`."""
        return [(p, self._text[s:e]) for p, (s, e, t) in self._scalars.items() if t == tag]
