import re
from html.parser import HTMLParser

import httpx
import pytest

from exporter import resources
from exporter.app import create_app
from exporter.service.runbook import anchor, render, sections
from exporter.settings import ExporterSettings


class Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.ids += [value for name, value in attrs if name == "id" and value]


def parsed(page: str) -> Ids:
    ids = Ids()
    ids.feed(page)
    return ids


async def get(path: str) -> httpx.Response:
    # No lifespan: the runbook needs no database; with a token set, it stays public.
    settings = ExporterSettings(
        database_url="sqlite+aiosqlite:///unused.sqlite3",
        api_token="s3cret",  # type: ignore[arg-type]
        metrics_token="scrape",  # type: ignore[arg-type]
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.get(path)


async def test_every_alert_has_its_anchor() -> None:
    response = await get("/runbook")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    alerts = set(re.findall(r"^\s*- alert: (\w+)\s*$", resources.text(resources.RULES_FILE), re.M))
    assert "TaskiqTaskFailureRateHigh" in alerts
    ids = parsed(response.text).ids
    assert len(ids) == len(set(ids))
    assert {alert.lower() for alert in alerts} <= set(ids)
    assert "taskiqtaskfailureratehigh" in ids


def test_the_rules_link_to_the_anchors() -> None:
    ids = set(parsed(render(resources.text(resources.RUNBOOK))).ids)
    links = re.findall(r"runbook_url: \S+#(\S+)", resources.text(resources.RULES_FILE))
    assert links
    assert set(links) <= ids


def test_content_is_escaped() -> None:
    markdown = (
        "# t <b>\n\n<script>alert(1)</script>\n\n"
        '## Evil"><script>x()</script>\n\n<img src=x onerror=alert(1)> & more\n'
    )
    page = render(markdown)
    assert "<script" not in page
    assert "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&amp; more" in page
    allowed = {"html", "head", "meta", "title", "style", "body", "pre", "nav", "ul", "li", "a"}
    assert set(parsed(page).tags) <= allowed | {"section", "h2"}


def test_sections_split_on_level_two_headings_outside_code() -> None:
    markdown = "intro\n## One\ntext\n```sh\n## not a heading\n```\n### sub\n## Two Words\nend\n"
    assert sections(markdown) == [
        ("", "intro"),
        ("One", "text\n```sh\n## not a heading\n```\n### sub"),
        ("Two Words", "end"),
    ]
    assert anchor("Two Words") == "two-words"
    assert anchor("TaskiqTasksStuck") == "taskiqtasksstuck"


@pytest.mark.parametrize(("query", "status"), [("?x=1", 400), ("?token=s3cret", 400)])
async def test_query_is_strict(query: str, status: int) -> None:
    response = await get("/runbook" + query)
    assert response.status_code == status
    assert set(response.json()) == {"error"}


async def test_get_only() -> None:
    settings = ExporterSettings(database_url="sqlite+aiosqlite:///unused.sqlite3")
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/runbook")
    assert response.status_code == 405
    assert set(response.json()) == {"error"}
