"""The jinja2 environment of every HTML page the project writes (templates in agents/templates/).

Autoescaping is on for ``.html`` templates: every value a template prints is escaped
unless it is :class:`markupsafe.Markup`. Filters: ``href`` (a relative, URL-quoted link,
agents.browser.html_text.href), ``script_json`` (JSON safe inside ``<script>``), ``score``,
``joined``. ``.js`` and ``.css`` templates are included verbatim (no data in them).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import jinja2
from markupsafe import Markup

from agents.browser.html_text import href, script_json
from agents.browser.results import joined


def _href(value: Any) -> Markup:
    return Markup(href(str(value)))  # quoted: only [A-Za-z0-9_.~/%-] remain, nothing to escape


def _script_json(value: Any) -> Markup:
    return Markup(script_json(value))


def score(value: Any, digits: int = 4) -> str:
    """A score with ``digits`` decimals, or an en dash when there is none."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}"


@lru_cache(maxsize=None)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("agents", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(href=_href, script_json=_script_json, score=score, joined=joined)
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
