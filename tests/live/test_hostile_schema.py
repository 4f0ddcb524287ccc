"""schemathesis against a whole daemon: every operation that `/openapi.json` lists, called with
generated valid and invalid input by a super admin and by an organization's ADMIN, over real
HTTP. No answer is a 500, every status is documented, every body matches its schema, and every
error has the one documented shape.

The daemon runs in the test process (real database, real Chromium against the simulator, real
Hypercorn on 127.0.0.1); schemathesis is synchronous (requests), so its calls run in a worker
thread while the daemon serves on the test's Trio loop.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis
import trio
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from wad.api.context import AppContext
from wad.config import ApiSettings, DaemonSettings, DatabaseSettings, Settings, WhatsAppSettings
from wad.daemon import Daemon
from wad.sim.model import SimConfig
from wad.sim.server import SimServer, serve

pytestmark = pytest.mark.browser

# Small and seeded: this runs in `make test`. Every operation gets this many examples per mode
# and caller; shrinking is off (a failure is reported as found, with its curl command).
EXAMPLES = 12
SEED = 20240609

ERROR_KEYS = {"code", "message", "field"}


@dataclass
class Target:
    url: str
    socket: Path
    ctx: AppContext
    org: uuid.UUID
    super_admin: str
    org_admin: str


@pytest.fixture
async def target(dsn: str, state_dir: Path, nursery: trio.Nursery) -> AsyncIterator[Target]:
    sim: SimServer = await nursery.start(partial(serve, seed=5, config=SimConfig(
        qr_rotate_s=5.0, sync_delay_s=0.3)))
    settings = Settings(
        daemon=DaemonSettings(state_dir=str(state_dir), node_id="hostile",
                              claim_interval_s=1.0, shutdown_grace_s=10.0),
        api=ApiSettings(listen="127.0.0.1:0", max_body_bytes=64 * 1024),
        database=DatabaseSettings(dsn=dsn, pool_min=1, pool_max=10),
        whatsapp=WhatsAppSettings(url=sim.url, ready_timeout_s=20.0,
                                  reconnect_initial_s=0.2, reconnect_max_s=1.0))
    daemon = Daemon(settings)
    ctx: AppContext = await nursery.start(daemon.run)
    addresses: list[str] = ctx.services.addresses
    url = next(a for a in addresses if a.startswith("http://127."))
    socket = settings.control_socket.absolute()
    transport = httpx.AsyncHTTPTransport(uds=str(socket))
    async with httpx.AsyncClient(transport=transport, base_url="http://wad", timeout=30) as sock:
        r = await sock.post("/api/organizations", json={"name": "Hostile Tours"})
        assert r.status_code == 201, r.text
        org = uuid.UUID(r.json()["id"])
        tokens = {}
        for role, org_id in (("SUPER_ADMIN", None), ("ADMIN", str(org))):
            body = {"role": role, "name": f"schemathesis {role}"}
            if org_id:
                body["organizationId"] = org_id
            r = await sock.post("/api/tokens", json=body)
            assert r.status_code == 201, r.text
            tokens[role] = r.json()["token"]
    try:
        yield Target(url=url, socket=socket, ctx=ctx, org=org,
                     super_admin=tokens["SUPER_ADMIN"], org_admin=tokens["ADMIN"])
    finally:
        daemon.shutdown.set()
        with trio.fail_after(60):
            await daemon.stopped.wait()


def error_shape(response: Any, case: schemathesis.Case) -> None:
    """Every failure answers `{"error": {"code", "message", "field"}}` as JSON, and nothing
    else: no HTML page, no stack trace, no empty body."""
    if response.status_code < 400:
        return
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    assert content_type.split(";")[0].strip() == "application/json", (
        f"{case.method} {case.formatted_path}: {response.status_code} with {content_type!r}")
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and set(error) == ERROR_KEYS, body
    assert isinstance(error["code"], str) and error["code"], body
    assert isinstance(error["message"], str) and error["message"], body
    assert error["field"] is None or isinstance(error["field"], str), body
    assert "Traceback" not in error["message"], body


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def fuzz(url: str, document: dict[str, Any], callers: dict[str, str],
         own_ids: dict[str, str]) -> tuple[list[str], dict[str, int]]:
    """Run every `/api/` operation of `document` against `url`; answer (failures, answers by
    status). Runs in a worker thread: schemathesis and requests are synchronous."""
    # An event stream never ends: its first event (`stream.start`) is enough to judge it.
    config = schemathesis.Config.from_dict({"max-stream-events": 1})
    schema = schemathesis.openapi.from_dict(document, config=config)
    failures: list[str] = []
    statuses: dict[str, int] = {}
    # An `Err` (an operation schemathesis cannot read) has no `ok` and fails the test here.
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert operations, "the OpenAPI document lists no operation"
    with requests.Session() as session:
        for operation in operations:
            if not operation.path.startswith("/api/"):
                continue  # documentation, health and static files take no input to fuzz
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                for who, token in callers.items():
                    run_one(operation, mode, f"{operation.label} [{mode.value}, {who}]",
                            token, url, session, own_ids, failures, statuses)
    return failures, statuses


def run_one(operation: Any, mode: GenerationMode, label: str, token: str, url: str,
            session: requests.Session, own_ids: dict[str, str], failures: list[str],
            statuses: dict[str, int]) -> None:
    checks = CHECKS + [error_check]
    if mode is GenerationMode.NEGATIVE:
        checks.append(negative_data_rejection)  # input outside the schema is refused

    @hypothesis.settings(max_examples=EXAMPLES, derandomize=True, database=None,
                         deadline=None, phases=[hypothesis.Phase.explicit,
                                                hypothesis.Phase.generate],
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.seed(SEED)
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode), own=st.booleans())
    def test(case: schemathesis.Case, own: bool) -> None:
        # Half the time aim at an id that exists (schemathesis alone would only ever invent
        # ids nobody has), so the handlers behind the 404s run too.
        if own:
            for name in list(case.path_parameters or {}):
                if name in own_ids:
                    case.path_parameters[name] = own_ids[name]
        headers = {"Authorization": f"Bearer {token}"}
        try:
            response = case.call(base_url=url, session=session, headers=headers, timeout=20)
            case.validate_response(response, checks=checks, headers=headers)
        except (Exception, BaseExceptionGroup) as exc:  # collected: one report of them all
            failures.append(f"{label}: {type(exc).__name__}: {_summary(exc)}\n"
                            f"    {case.as_curl_command(headers=headers)}")
            return
        statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1

    test()


def _summary(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_summary(e) for e in exc.exceptions)
    return " ".join(str(exc).split())[:400]


@schemathesis.check
def error_check(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                case: schemathesis.Case) -> bool | None:
    """The documented error shape (see `error_shape`)."""
    error_shape(response, case)
    return None


async def test_schemathesis_finds_no_500_and_no_undocumented_answer(target: Target) -> None:
    async with httpx.AsyncClient(base_url=target.url, timeout=30) as http:
        served = await http.get("/openapi.json")
        assert served.status_code == 200, served.text
        document = served.json()
    callers = {"super admin": target.super_admin, "org admin": target.org_admin}
    own_ids = {"org": str(target.org)}
    with trio.fail_after(300):
        failures, statuses = await trio.to_thread.run_sync(
            partial(fuzz, target.url, document, callers, own_ids))
    kinds = sorted({failure.split("\n")[0][:200] for failure in failures})
    assert not failures, ("\n".join(kinds) + "\n\nfor example:\n\n" + "\n\n".join(failures[:5]))
    # It reached the handlers, not only the door: successes and validation errors both.
    assert sum(n for status, n in statuses.items() if status.startswith("2")) > 20, statuses
    assert statuses.get("400", 0) > 20, statuses
