"""`/docs` in a real Chromium with every request outside the daemon cut off (as on a server
without internet access): Swagger UI draws the daemon's own OpenAPI document from the daemon's
own files, under the page's content security policy, with no request elsewhere and no policy
violation. A screenshot is kept in tests/artifacts/docs.png.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_asyncio import aio_as_trio

from tests.support.events import serve_app
from tests.support.simfixtures import headless_chromium
from wad.api.context import Services
from wad.db.pool import Database

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).parent.parent / "artifacts"


@pytest.fixture
async def chromium(aio_loop: None) -> AsyncIterator[Any]:
    async with headless_chromium("wad-test-docs-") as browser:
        yield browser


async def test_docs_draw_the_api_with_nothing_but_the_daemon(
        db: Database, state_dir: Path, nursery: trio.Nursery, chromium: Any) -> None:
    served, shutdown = await serve_app(nursery, db, state_dir, Services())
    requested: list[str] = []
    cut_off: list[str] = []
    console: list[str] = []
    errors: list[str] = []

    async def only_the_daemon(route: Any) -> None:  # runs on asyncio (Playwright's loop)
        url = route.request.url
        requested.append(url)
        if url.startswith(served.url + "/"):
            await route.continue_()
        else:
            cut_off.append(url)
            await route.abort("internetdisconnected")

    try:
        context = await aio_as_trio(chromium.new_context)()
        page = await aio_as_trio(context.new_page)()
        await aio_as_trio(page.route)("**/*", only_the_daemon)
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: errors.append(str(error)))
        with trio.fail_after(60):
            await aio_as_trio(page.goto)(f"{served.url}/docs")
            try:
                title = await aio_as_trio(page.wait_for_function)(
                    """() => {
                        const t = document.querySelector('.swagger-ui .info .title');
                        return t && t.textContent.includes('wad control API') && t.textContent;
                    }""", timeout=30_000, polling=100)
            except Exception as exc:
                raise AssertionError(f"Swagger UI did not draw: console {console}, errors "
                                     f"{errors}, requests {requested}") from exc
            assert "wad control API" in await aio_as_trio(title.json_value)()
            # Every operation is drawn, the audit trail among them.
            await aio_as_trio(page.locator(
                '.opblock-summary-path[data-path="/api/audit"]').first.wait_for)(
                state="visible", timeout=30_000)
            operations = await aio_as_trio(page.locator(".opblock").count)()
            assert operations > 20
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await aio_as_trio(page.screenshot)(path=str(ARTIFACTS / "docs.png"))
        await aio_as_trio(context.close)()
    finally:
        shutdown.set()

    assert cut_off == [], "the page asked for something outside the daemon"
    assert f"{served.url}/openapi.json" in requested
    assert any(url.endswith("/docs/swagger/swagger-ui-bundle.js") for url in requested)
    violations = [line for line in console
                  if "Content Security Policy" in line or "Refused to" in line]
    assert violations == [], violations
    assert errors == [], errors
