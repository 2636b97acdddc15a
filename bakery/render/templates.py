"""The Jinja2 environment for cloudinit/ templates: strict, deterministic, cached.

Templates live in the repository's top-level cloudinit/ folder (wheels carry them
as bakery/_data/cloudinit). An undefined variable is an error, never an empty
string (STYLE.md #3).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jinja2

from bakery.errors import RenderError


def data_dir(name: str) -> Path:
    """A top-level data folder (cloudinit, packer): in the wheel, else in the checkout."""
    packaged = Path(__file__).resolve().parent.parent / "_data" / name
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent.parent / name


def quote(value: object) -> str:
    """A YAML-safe scalar: a JSON string (valid YAML), without Jinja's HTML escaping."""
    return json.dumps(value)


# Defence in depth: the spec's grammar already keeps newlines and control characters out,
# but a value from elsewhere (state.json, a cloud's answer) must not add a line either.
_SYSTEMD_BARE = re.compile(r"[A-Za-z0-9_@+=:,./-]+\Z")


def one_line(value: object) -> str:
    """The value as text, refused when it holds a newline or another control character."""
    text = str(value)
    bad = next((c for c in text if not c.isprintable()), None)
    if bad is not None:
        raise RenderError(f"refusing to render {text[:60]!r}: it contains U+{ord(bad):04X} (a file line would break)")
    return text


def systemd_args(argv: list[str]) -> str:
    """An ExecStart= command line: each argument one word for systemd. Arguments other than
    plain words are double-quoted with \\ and \" escaped; % and $ are doubled (systemd's
    specifier and variable expansion)."""
    words = []
    for arg in argv:
        text = one_line(arg).replace("%", "%%").replace("$", "$$")
        if not _SYSTEMD_BARE.match(text):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        words.append(text)
    return " ".join(words)


def env_words(argv: list[str]) -> str:
    """A double-quoted EnvironmentFile= value that `$VAR` in ExecStart= splits back into
    `argv` (split at whitespace, so no argument may hold any)."""
    for arg in argv:
        if not arg or any(c.isspace() or c in '"\\$' or not c.isprintable() for c in arg):
            raise RenderError(f"refusing to render {arg[:60]!r} into an environment file: no whitespace, quotes, '\\' or '$' allowed there")
    return '"' + " ".join(argv) + '"'


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("cloudinit"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # YAML and shell, not HTML
    )
    env.filters["q"] = quote
    env.filters["line"] = one_line
    env.filters["systemd_args"] = systemd_args
    env.filters["env_words"] = env_words
    return env


def render(template: str, **context: Any) -> str:
    try:
        return environment().get_template(template).render(**context)
    except jinja2.UndefinedError as e:
        raise RenderError(f"cloudinit/{template}: {e.message} (a template input is missing)") from None
    except jinja2.TemplateError as e:
        raise RenderError(f"cloudinit/{template}: {e}") from None
