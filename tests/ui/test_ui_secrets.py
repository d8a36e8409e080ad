"""No page of ``chatstep ui`` shows the API key: the map, the batch run and the UI itself all had
it in their environment. Every page reachable from the front page is fetched (HTML and JSON),
plus Datasette's introspection pages, and the charts are rendered in Chromium."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import deque
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

from .conftest import FAKE_KEY

#: Bounds the crawl (a few hundred pages cover every table, row, facet and query here).
MAX_PAGES = 400
INTROSPECTION = (
    "/-/metadata.json",
    "/-/settings.json",
    "/-/plugins.json",
    "/-/versions.json",
    "/-/databases.json",
    "/-/threads.json",
    "/-/actor.json",
    "/-/dashboards",
)
# Pieces of the key that are long enough to mean a leak if any shows up.
FRAGMENTS = (FAKE_KEY, FAKE_KEY[3:], FAKE_KEY[-16:], FAKE_KEY[:16])


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.links.append(value)


def _fetch(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            kind = response.headers.get("content-type", "")
            return response.status, kind, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, "", exc.read().decode("utf-8", "replace")
    except OSError as exc:
        raise AssertionError(f"{url}: {exc}") from exc


def _crawl(base: str) -> dict[str, str]:
    seen: dict[str, str] = {}
    queue = deque(["/", *INTROSPECTION])
    while queue and len(seen) < MAX_PAGES:
        path = queue.popleft()
        if path in seen:
            continue
        _, kind, body = _fetch(base + path)
        seen[path] = body
        if "html" not in kind:
            continue
        parser = _Links()
        parser.feed(body)
        for link in parser.links:
            target = urlsplit(urljoin(base + path, link))
            if f"{target.scheme}://{target.netloc}" != base or target.path.endswith(".csv"):
                continue
            relative = target.path + (f"?{target.query}" if target.query else "")
            if relative not in seen:
                queue.append(relative)
                last = target.path.rsplit("/", 1)[-1]
                if not target.path.startswith("/-/") and "." not in last:  # its JSON form
                    query = f"?{target.query}" if target.query else ""
                    queue.append(f"{target.path}.json{query}")
    return seen


def test_no_page_shows_the_key(ui_url: str) -> None:
    pages = _crawl(ui_url)
    assert len(pages) > 40  # the crawl really walked the site
    assert any("/history/calls/" in path for path in pages)  # ...down to single calls
    for path, body in pages.items():
        for fragment in FRAGMENTS:
            assert fragment not in body, f"{path} shows the API key"


def test_rendered_charts_show_no_key(page: Any, ui_url: str) -> None:
    for path in ("/-/dashboards/run", "/-/dashboards/daily", "/history/calls"):
        page.goto(ui_url + path)
        page.wait_for_load_state("networkidle")
        content = page.content()
        assert not any(fragment in content for fragment in FRAGMENTS)
