"""The status page: `GET /` on the daemon's listener, one HTML page rendered on the server from a Jinja2 template.

`render(document)` turns what the daemon knows into the page: every watch (its state as a colour and a word, the
observed and deployed image, the last action with its AWX or GitHub link, the error), the actions that wait for a
person's approval with Approve and Reject buttons, and the last 50 history entries. `document` is made of the
`status --json` and `history --json` documents, the waiting approvals, whether this instance is on standby and
whether approving from the page is possible (`can_approve`: the daemon has an API token); any part of it may be
missing or None, and the page then says less, never fails.

The page reads without JavaScript and refreshes itself. `static/page.js` only drives the buttons: it asks for the
API token once and POSTs to `/approve` or `/reject`; `asset(name)` hands out that script and `static/page.css`,
and nothing else. Everything shown is HTML-escaped (the template environment autoescapes): image names, tags and
errors come from outside. The page has no inline script, style or event handler, so the daemon serves it under the
strict `CSP`. Rendering reads the document only: GET changes nothing.

Jinja2 is imported on the first render, so the CLI's start-up does not pay for it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

from reconciler import page_view
from reconciler.page_view import HISTORY_LIMIT, REFRESH_SECONDS

__all__ = ["CSP", "HISTORY_LIMIT", "REFRESH_SECONDS", "asset", "render"]

if TYPE_CHECKING:
    import jinja2

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
TEMPLATE = "page.html"
_ASSETS = {"page.css": "text/css; charset=utf-8", "page.js": "text/javascript; charset=utf-8"}  # the allowlist


# --- the public API ---------------------------------------------------------------------------------------------


def render(document: Mapping[str, Any]) -> bytes:
    """The status page for `document` (see the module docstring), as UTF-8 HTML."""
    now = page_view.generated(document)
    return _environment().get_template(TEMPLATE).render(page=page_view.page_of(document, now)).encode("utf-8")


def asset(name: str) -> tuple[str, bytes] | None:
    """(content type, bytes) of a static file the page loads, for `GET /static/<name>`; None for any name that is
    not one of them (a fixed allowlist: no path is ever built from `name`)."""
    content_type = _ASSETS.get(name)
    if content_type is None:
        return None
    return content_type, resources.files("reconciler").joinpath("static", name).read_bytes()


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2  # noqa: PLC0415  (lazily: see the module's docstring)

    return jinja2.Environment(
        loader=jinja2.PackageLoader("reconciler", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt name in the template fails the tests, not silently blank
        lstrip_blocks=True,  # not trim_blocks: the line break after a tag separates the words on either side
    )
