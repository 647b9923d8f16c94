"""GET /runbook: the shipped runbook (exporter/assets/runbook.md) as one HTML page.

No markdown renderer: each ``## `` heading starts a section whose ``id`` is the
heading in lower case, which is the anchor the alert rules' ``runbook_url`` points
at (``#taskiqtaskfailureratehigh``); the text is escaped and shown as written.
"""

from __future__ import annotations

import functools
import html
import re

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from exporter import resources
from exporter.service.params import NoQuery, parse_query

HEADING = "## "
FENCE = "```"
# Nothing on the page runs or loads anything; the inline style is its only style.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}
STYLE = (
    "body{font-family:sans-serif;max-width:60rem;margin:auto;padding:0 1rem}"
    "pre{white-space:pre-wrap;background:#f6f6f6;padding:.75rem}"
)


def anchor(heading: str) -> str:
    """The section id of ``heading``: lower case, whitespace as ``-``."""
    return re.sub(r"\s+", "-", heading.strip().lower())


def sections(markdown: str) -> list[tuple[str, str]]:
    """``(heading, text)`` per ``## `` heading outside code fences; the text before
    the first heading comes first, with the heading ``""``."""
    out: list[tuple[str, list[str]]] = [("", [])]
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith(FENCE):
            fenced = not fenced
        if not fenced and line.startswith(HEADING):
            out.append((line[len(HEADING) :].strip(), []))
        else:
            out[-1][1].append(line)
    return [(heading, "\n".join(lines).strip("\n")) for heading, lines in out]


def render(markdown: str, *, title: str = "taskiq-exporter runbook") -> str:
    """The page: a table of contents, then one ``<section id=...>`` per heading."""
    esc = html.escape
    parts = sections(markdown)
    intro, body = parts[0][1], parts[1:]
    toc = "".join(f'<li><a href="#{esc(anchor(h))}">{esc(h)}</a></li>' for h, _ in body)
    out = [
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>',
        f"<style>{STYLE}</style></head><body>",
        f"<pre>{esc(intro)}</pre>" if intro else "",
        f"<nav><ul>{toc}</ul></nav>",
    ]
    for heading, text in body:
        ident = esc(anchor(heading))
        out.append(
            f'<section id="{ident}"><h2><a href="#{ident}">{esc(heading)}</a></h2>'
            f"<pre>{esc(text)}</pre></section>"
        )
    out.append("</body></html>\n")
    return "\n".join(out)


@functools.cache
def page() -> str:
    # The shipped file does not change under a running process.
    return render(resources.text(resources.RUNBOOK))


async def runbook(request: Request) -> Response:
    parse_query(NoQuery, request.query_params)
    return HTMLResponse(page(), headers=HEADERS)
