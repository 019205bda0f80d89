"""What vaelab's self-contained HTML pages (the report, the explorer) share.

Each page is one file opened from disk: its CSS and scripts are inline, and its
Content-Security-Policy forbids everything else, so a stray external reference shows up as a
broken page rather than as a silent request. The CSS and JavaScript live as files in the package
(declared in pyproject.toml's package-data) and are read with `read_asset`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from html import escape as _escape_markup
from importlib import resources
from typing import Any


def escape(value: Any) -> str:
    """`value` as text, safe both between tags and inside a quoted attribute value."""
    return _escape_markup(str(value), quote=True)


def json_for_script(value: Any) -> str:
    """JSON that cannot end its <script> element or open a comment inside it."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


BINARY_PIXELS = "{0,1} pixels as drawn (a binary data set, not re-binarized)"


def pixels_text(binarization: Any, channels: int = 1) -> str:
    """How a run's pixels were modelled, for pages: "<binarization> binarization", or the levels of
    grey or colour pixels that nothing binarized (data.binarization "grey"), or {0,1} images ("binary")."""
    if binarization == "binary":
        return BINARY_PIXELS
    if binarization == "grey":
        return "grey-level pixels (not binarized)" if channels == 1 else "colour pixels in their levels (not binarized)"
    if binarization is None:
        return "binarization unknown"
    return f"{binarization} binarization"


@functools.cache
def read_asset(package: str, name: str) -> str:
    """The text of the file `name` shipped inside `package`, read once per process."""
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def _check_inline(kind: str, source: str) -> str:
    # Inline text is raw: the first "</style" or "</script" in it would end its element early.
    if f"</{kind}" in source.lower():
        raise ValueError(f"inline {kind} text may not contain '</{kind}'")
    return source


def page(title: str, body: str, csp: str, *, css: str = "", scripts: Sequence[str] = ()) -> str:
    """One whole page: `title` is plain text, `body` is markup, `csp` the Content-Security-Policy.

    `css` goes into the head's <style>; `scripts` (JavaScript sources) run in order after the body.
    """
    if '"' in csp:
        raise ValueError(f"a Content-Security-Policy holds no double quote: {csp!r}")
    code = "".join(f"<script>{_check_inline('script', source)}</script>" for source in scripts)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{_check_inline('style', css)}</style></head>"
            f"<body>{body}{code}</body></html>\n")
