"""Shared fixtures: one real PostgreSQL cluster per test session, a fresh database per test.

Markers say what a test needs, so that `make check` can run the unit tests alone
(`pytest -m "not db and not browser"`): `browser` (real Chromium) is set by most live test
modules themselves, and added here to any test that asks for the `browser`/`playwright` fixtures
or whose module uses the simulator stack (`tests.support.stack`, `tests.support.simfixtures`);
`db` (PostgreSQL) is added here to any test that asks for a database fixture (directly or through
another fixture) or whose module runs a cluster or a daemon process (`wad.db.embedded`,
`tests.support.daemonproc`).
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
import trio_asyncio

from wad.api.context import Services
from wad.db import migrate
from wad.db.embedded import EmbeddedPostgres
from wad.db.pool import Database

# Helpers in tests/support assert too (and some are pytest plugins of test modules): rewrite
# their asserts, whichever imports them first.
pytest.register_assert_rewrite("tests.support")

if TYPE_CHECKING:
    from tests.support.events import Served


def _reachable_tempdir(prefix: str) -> Path:
    """A temp dir the `postgres` user can enter (mkdtemp makes 0700 dirs)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o711)
    return path


TEMPLATE_DB = "wad_template"


async def _make_template(admin_dsn: str) -> None:
    async with trio_asyncio.open_loop():
        async with Database.open(admin_dsn, min_size=1, max_size=1) as admin:
            await admin.execute(f"CREATE DATABASE {TEMPLATE_DB}")
        async with Database.open(admin_dsn.replace("/wad?", f"/{TEMPLATE_DB}?"),
                                 min_size=1, max_size=1) as template:
            await migrate.apply(template)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[EmbeddedPostgres]:
    """A private cluster for the whole test session, fsync off, with a migrated template."""
    root = _reachable_tempdir("wad-test-pg-")
    cluster = EmbeddedPostgres(root / "data", fsync=False)
    cluster.start()
    trio.run(_make_template, cluster.dsn)
    try:
        yield cluster
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A state directory the embedded cluster's `postgres` user can reach."""
    path = _reachable_tempdir("wad-test-state-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def aio_loop() -> AsyncIterator[None]:
    """The asyncio loop that asyncpg and Playwright run on, for the test's duration."""
    async with trio_asyncio.open_loop():
        yield


@asynccontextmanager
async def _scratch_database(cluster: EmbeddedPostgres, template: str) -> AsyncIterator[str]:
    name = "t_" + uuid.uuid4().hex[:12]
    async with Database.open(cluster.dsn, min_size=1, max_size=1) as admin:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    try:
        yield cluster.dsn.replace("/wad?", f"/{name}?")
    finally:
        async with Database.open(cluster.dsn, min_size=1, max_size=1) as admin:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def empty_dsn(pg_cluster: EmbeddedPostgres, aio_loop: None) -> AsyncIterator[str]:
    """A DSN of a new, empty database (dropped after the test)."""
    async with _scratch_database(pg_cluster, "template0") as dsn:
        yield dsn


@pytest.fixture
async def dsn(pg_cluster: EmbeddedPostgres, aio_loop: None) -> AsyncIterator[str]:
    """A DSN of a new database with every migration applied (copied from a template)."""
    async with _scratch_database(pg_cluster, TEMPLATE_DB) as dsn:
        yield dsn


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[Database]:
    """A pool on a new, migrated database."""
    async with Database.open(dsn, min_size=1, max_size=5) as database:
        yield database


@pytest.fixture
async def served(db: Database, state_dir: Path, nursery: trio.Nursery
                 ) -> AsyncIterator[Served]:
    """The real app on 127.0.0.1 port 0 with an event bus (and no organization manager)."""
    from tests.support.events import serve_app
    from wad.bus import EventBus

    found, shutdown = await serve_app(nursery, db, state_dir, Services(bus=EventBus()))
    try:
        yield found
    finally:
        for client in found.clients:
            await client.aclose()
        shutdown.set()


_DB_FIXTURES = frozenset({"pg_cluster", "empty_dsn", "dsn", "db", "served"})
_BROWSER_FIXTURES = frozenset({"playwright", "browser"})
_DB_MODULES = frozenset({"wad.db.embedded", "tests.support.daemonproc", "tests.support.outage"})
_BROWSER_MODULES = frozenset({"tests.support.stack", "tests.support.simfixtures"})


def _modules_used(module: object) -> set[str]:
    """The modules a test module imports, or imports names from (and its `pytest_plugins`)."""
    found = set(getattr(module, "pytest_plugins", ()))
    for value in vars(module).values():
        found.add(value.__name__ if inspect.ismodule(value)
                  else str(getattr(value, "__module__", "")))
    return found


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what each test needs (see the module's docstring)."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        modules = _modules_used(getattr(item, "module", None) or object())
        if used & _DB_FIXTURES or modules & _DB_MODULES:
            item.add_marker(pytest.mark.db)
        if used & _BROWSER_FIXTURES or modules & _BROWSER_MODULES:
            item.add_marker(pytest.mark.browser)
