"""The Jinja2 environment for cloudinit/ templates: strict, deterministic, cached.

Templates live in the repository's top-level cloudinit/ folder (wheels carry them
as bakery/_data/cloudinit). An undefined variable is an error, never an empty
string (STYLE.md #3).
"""

from __future__ import annotations

import functools
import json
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


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("cloudinit"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # YAML and shell, not HTML
    )
    env.filters["q"] = quote
    return env


def render(template: str, **context: Any) -> str:
    try:
        return environment().get_template(template).render(**context)
    except jinja2.UndefinedError as e:
        raise RenderError(f"cloudinit/{template}: {e.message} (a template input is missing)") from None
    except jinja2.TemplateError as e:
        raise RenderError(f"cloudinit/{template}: {e}") from None
