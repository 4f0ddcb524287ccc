"""`GET /metrics`: the daemon's Prometheus metrics (see `wad.observe.metrics`).

Scrapes need a `METRICS` token (made for the monitoring system: it reads this and nothing else),
a `SUPER_ADMIN` token, or the control socket. The metrics name every organization, so an
organization's token may not read them.
"""

from __future__ import annotations

from flask.sansio.blueprints import BlueprintSetupState
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Blueprint, Response, current_app, g
from quart_schema import hide
from quart_trio import QuartTrio

from wad.api import auth
from wad.api.context import AppContext, current
from wad.observe.metrics import Metrics

bp = Blueprint("metrics", __name__)

def metrics_of(app: QuartTrio | None = None) -> Metrics:
    """The app's metrics."""
    found = (app or current_app).config["wad"].metrics
    assert found is not None, "made with the app"
    return found


@bp.record_once
def _make_metrics(state: BlueprintSetupState) -> None:
    # Made (and subscribed to the bus) with the app, before the daemon starts organizations.
    ctx: AppContext = state.app.config["wad"]
    if ctx.metrics is not None:  # the daemon's, run in its supervision tree
        return
    ctx.metrics = Metrics(
        db=ctx.db, bus=ctx.services.bus, manager=ctx.services.orgs,
        node=ctx.settings.node,
        pool_max=ctx.settings.database.pool_max,
        state_dir=None if ctx.settings.database.dsn else ctx.settings.state_path.absolute(),
        lane_counts=lambda: None if ctx.lane is None else (ctx.lane.answered,
                                                           ctx.lane.handed_off))


@bp.get("/metrics")
@hide
async def scrape() -> Response:
    """The metrics in Prometheus' text format (a METRICS token or the super admin)."""
    g.principal = await auth.authenticate(current().token_cache())
    auth.authorize_metrics()
    body = await metrics_of().render()
    response = Response(body, status=200, content_type=CONTENT_TYPE_LATEST)
    response.headers["Cache-Control"] = "no-store"
    return response
