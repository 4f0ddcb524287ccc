"""The control API's blueprints, one module per area; `wad.api.app` mounts them."""

from wad.api.routes import (
    admin,
    changes,
    docs,
    events,
    imports,
    metrics,
    outbound,
    read,
    status_page,
    whatsapp,
)

BLUEPRINTS = (whatsapp.bp, imports.bp, outbound.bp, read.bp, admin.bp, changes.bp, events.bp,
              metrics.bp, status_page.bp, docs.bp)
"""Every blueprint, in the order `create_app` registers them."""
