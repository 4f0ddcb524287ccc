"""Clients (one per phone number per organization) and their sales-funnel status history."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import msgspec

from wad.db.models import Client, ClientStatus, ClientStatusChange
from wad.db.pool import Executor, atomic
from wad.db.repo import changes as feed
from wad.db.repo import columns, many, one, returned
from wad.errors import NotFound

_COLS = columns(Client)
_HISTORY_COLS = columns(ClientStatusChange)

# Inserts, or refreshes the names given; when nothing would change the row is left alone (no
# write, no updated_at bump) and RETURNING answers nothing, so the caller reads it.
# `xmax = 0` holds only for a freshly inserted row version: that is how we tell "created".
_UPSERT = f"""
INSERT INTO clients AS c (organization_id, phone, name, push_name) VALUES ($1, $2, $3, $4)
ON CONFLICT (organization_id, phone) DO UPDATE
    SET name = coalesce(EXCLUDED.name, c.name), push_name = coalesce(EXCLUDED.push_name, c.push_name)
    WHERE (EXCLUDED.name IS NOT NULL AND EXCLUDED.name IS DISTINCT FROM c.name)
       OR (EXCLUDED.push_name IS NOT NULL AND EXCLUDED.push_name IS DISTINCT FROM c.push_name)
RETURNING {_COLS}, (xmax = 0) AS created
"""


async def upsert(db: Executor, *, organization_id: uuid.UUID, phone: str,
                 name: str | None = None, push_name: str | None = None) -> tuple[Client, bool]:
    """The client with this phone (E.164), created when missing; `name` and `push_name` are
    updated when given. Answers (client, created). A creation or change is in the feed
    (`client.created`, `client.updated`) with it."""
    async with atomic(db) as tx:
        row = await tx.fetchrow(_UPSERT, organization_id, phone, name, push_name)
        if row is not None:
            client, created = returned(Client, row), bool(row["created"])
            await _changed(tx, client, created=created)
            return client, created
    found = await get_by_phone(db, organization_id=organization_id, phone=phone)
    if found is None:
        raise NotFound(f"client {phone} vanished while being upserted")
    return found, False


async def get(db: Executor, *, client_id: uuid.UUID) -> Client | None:
    return one(Client, await db.fetchrow(f"SELECT {_COLS} FROM clients WHERE id = $1", client_id))


async def get_by_phone(db: Executor, *, organization_id: uuid.UUID, phone: str) -> Client | None:
    row = await db.fetchrow(
        f"SELECT {_COLS} FROM clients WHERE organization_id = $1 AND phone = $2",
        organization_id, phone)
    return one(Client, row)


async def update_profile(
    db: Executor, *, client_id: uuid.UUID, name: str | None = None,
    push_name: str | None = None, saved_name: str | None = None,
    profile_picture_url: str | None = None, preferred_language: str | None = None,
) -> Client | None:
    """Set the profile fields that are given (None keeps the stored value); a change is in
    the feed (`client.updated`) with it."""
    async with atomic(db) as tx:
        row = await tx.fetchrow(
            f"""WITH old AS (SELECT * FROM clients WHERE id = $1 FOR UPDATE)
                UPDATE clients c SET
                    name = coalesce($2, c.name),
                    push_name = coalesce($3, c.push_name),
                    saved_name = coalesce($4, c.saved_name),
                    profile_picture_url = coalesce($5, c.profile_picture_url),
                    preferred_language = coalesce($6, c.preferred_language)
                FROM old WHERE c.id = old.id
                RETURNING {columns(Client, "c")},
                    (c.name, c.push_name, c.saved_name, c.profile_picture_url,
                     c.preferred_language) IS DISTINCT FROM
                    (old.name, old.push_name, old.saved_name, old.profile_picture_url,
                     old.preferred_language) AS changed""",
            client_id, name, push_name, saved_name, profile_picture_url, preferred_language)
        if row is None:
            return None
        client = returned(Client, row)
        if row["changed"]:
            await _changed(tx, client, created=False)
        return client


async def merge_metadata(db: Executor, *, client_id: uuid.UUID, metadata: dict[str, Any]
                         ) -> Client | None:
    """Add or replace keys of the client's metadata (other keys are kept); no write when they
    are there already. A change is in the feed (`client.updated`) with it."""
    async with atomic(db) as tx:
        row = await tx.fetchrow(
            f"""UPDATE clients SET metadata = metadata || $2::jsonb
                WHERE id = $1 AND NOT (metadata @> $2::jsonb) RETURNING {_COLS}""",
            client_id, metadata)
        if row is None:
            return await get(tx, client_id=client_id)
        client = returned(Client, row)
        await _changed(tx, client, created=False)
        return client


async def update_derived(db: Executor, *, client_id: uuid.UUID, metadata: dict[str, Any],
                         preferred_language: str | None) -> Client | None:
    """What processing learns about a client, in one call (`wad_update_client`): `metadata`
    merged into its metadata, its name set to the best one known (saved, else push, else the
    metadata's "given_name"), its preferred language set when given. Written, with one
    `client.updated` entry in the feed, only when something changes. Answers the client as it
    is now, None when there is no such client."""
    return one(Client, await db.fetchrow(
        f"SELECT {_COLS} FROM wad_update_client($1, $2::jsonb, $3)",
        client_id, metadata, preferred_language))


async def _changed(db: Executor, client: Client, *, created: bool) -> None:
    await feed.record(db, organization_id=client.organization_id,
                         kind="client.created" if created else "client.updated",
                         data=feed.client_data(client))


# One statement, so the change and its history row are written atomically; the row lock makes
# concurrent detectors record the status they actually replaced.
_SET_STATUS = f"""
WITH old AS (
    SELECT id, status FROM clients WHERE id = $1 FOR UPDATE
), changed AS (
    UPDATE clients c SET status = $2 FROM old
    WHERE c.id = old.id AND old.status <> $2
    RETURNING c.id, c.organization_id, old.status AS from_status
)
INSERT INTO client_status_history (client_id, organization_id, from_status, to_status, detector,
                                   reason)
SELECT id, organization_id, from_status, $2, $3, $4 FROM changed
RETURNING {_HISTORY_COLS}
"""


async def set_status(db: Executor, *, client_id: uuid.UUID, status: ClientStatus, detector: str,
                     reason: str | None = None) -> ClientStatusChange | None:
    """Move the client to `status`, writing the history row with who decided and why. Answers the
    change, or None when the client already had that status. Raises NotFound for no client.
    The change is in the feed (`client.status`) with it."""
    async with atomic(db) as tx:
        row = await tx.fetchrow(_SET_STATUS, client_id, status, detector, reason)
        if row is None:
            if await tx.fetchval("SELECT 1 FROM clients WHERE id = $1", client_id) is None:
                raise NotFound(f"no client {client_id}")
            return None
        change = returned(ClientStatusChange, row)
        await feed.record(tx, organization_id=change.organization_id, kind="client.status",
                             data=feed.client_status_data(change))
        return change


async def status_history(db: Executor, *, client_id: uuid.UUID) -> list[ClientStatusChange]:
    """The client's status changes, oldest first."""
    rows = await db.fetch(
        f"SELECT {_HISTORY_COLS} FROM client_status_history WHERE client_id = $1 ORDER BY id",
        client_id)
    return many(ClientStatusChange, rows)


async def first(db: Executor, *, organization_id: uuid.UUID) -> Client | None:
    """The organization's oldest client."""
    return one(Client, await db.fetchrow(
        f"SELECT {_COLS} FROM clients WHERE organization_id = $1 ORDER BY created_at, id LIMIT 1",
        organization_id))


class ImportedProfile(msgspec.Struct, frozen=True):
    """What an import knows of one client (see `upsert_imported`)."""

    phone: str
    name: str | None = None
    push_name: str | None = None
    saved_name: str | None = None
    preferred_language: str | None = None
    country: dict[str, Any] = {}
    """Added to the metadata when it has no "country" yet."""
    given_name: str | None = None
    """Set as the metadata's "given_name"."""


_IMPORT_INSERT = f"""
INSERT INTO clients (organization_id, phone, name, push_name, saved_name, preferred_language,
                     metadata)
SELECT $1, u.phone, u.name, u.push_name, u.saved_name, u.lang,
       u.country || CASE WHEN u.given IS NULL THEN '{{}}'::jsonb
                         ELSE jsonb_build_object('given_name', u.given) END
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[],
            $8::text[]) AS u(phone, name, push_name, saved_name, lang, country, given)
ON CONFLICT (organization_id, phone) DO NOTHING
RETURNING {_COLS}
"""
_IMPORT_UPDATE = f"""
WITH u AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::jsonb[], $8::text[])
        AS u(phone, name, push_name, saved_name, lang, country, given)
), next AS (
    SELECT c.id,
           coalesce(u.name, c.name) AS name, coalesce(u.push_name, c.push_name) AS push_name,
           coalesce(u.saved_name, c.saved_name) AS saved_name,
           coalesce(u.lang, c.preferred_language) AS lang,
           CASE WHEN c.metadata ? 'country' THEN c.metadata ELSE c.metadata || u.country END
           || CASE WHEN u.given IS NULL THEN '{{}}'::jsonb
                   ELSE jsonb_build_object('given_name', u.given) END AS metadata
    FROM clients c JOIN u ON c.organization_id = $1 AND c.phone = u.phone
)
UPDATE clients c SET name = n.name, push_name = n.push_name, saved_name = n.saved_name,
                     preferred_language = n.lang, metadata = n.metadata
FROM next n
WHERE c.id = n.id AND (c.name, c.push_name, c.saved_name, c.preferred_language, c.metadata)
      IS DISTINCT FROM (n.name, n.push_name, n.saved_name, n.lang, n.metadata)
RETURNING {columns(Client, "c")}
"""


async def upsert_imported(db: Executor, *, organization_id: uuid.UUID,
                          profiles: Sequence[ImportedProfile]) -> dict[str, tuple[Client, bool]]:
    """Create or update many clients at once (phones distinct), as an import does one by one
    with `upsert`, `update_profile` and `merge_metadata`: names and language replaced when
    given, the country added once, the given name set. Answers phone -> (client, created).
    Each creation or change is in the feed with it (call inside the import's transaction)."""
    if len({p.phone for p in profiles}) != len(profiles):
        raise ValueError("upsert_imported: a phone appears twice")
    args = (organization_id, [p.phone for p in profiles], [p.name for p in profiles],
            [p.push_name for p in profiles], [p.saved_name for p in profiles],
            [p.preferred_language for p in profiles], [p.country for p in profiles],
            [p.given_name for p in profiles])
    out = {c.phone: (c, True) for c in many(Client, await db.fetch(_IMPORT_INSERT, *args))}
    updated: list[Client] = []
    rest = [i for i, p in enumerate(profiles) if p.phone not in out]
    if rest:
        picked = [[column[i] for i in rest] for column in args[1:]]
        updated = many(Client, await db.fetch(_IMPORT_UPDATE, organization_id, *picked))
        for c in updated:
            out[c.phone] = (c, False)
        missing = [profiles[i].phone for i in rest if profiles[i].phone not in out]
        if missing:  # nothing to change: read them
            rows = await db.fetch(f"SELECT {_COLS} FROM clients WHERE organization_id = $1 "
                                  "AND phone = ANY($2::text[])", organization_id, missing)
            for c in many(Client, rows):
                out[c.phone] = (c, False)
    for p in profiles:
        client, created = out[p.phone]
        if created:
            await _changed(db, client, created=True)
    for client in updated:
        await _changed(db, client, created=False)
    return out


_SET_STATUSES = f"""
WITH u AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])
        AS u(id, status, detector, reason)
), old AS (
    SELECT c.id, c.status FROM clients c JOIN u ON u.id = c.id ORDER BY c.id FOR UPDATE OF c
), changed AS (
    UPDATE clients c SET status = u.status FROM old, u
    WHERE c.id = old.id AND u.id = old.id AND old.status <> u.status
    RETURNING c.id, c.organization_id, old.status AS from_status, u.status AS to_status,
              u.detector, u.reason
)
INSERT INTO client_status_history (client_id, organization_id, from_status, to_status, detector,
                                   reason)
SELECT id, organization_id, from_status, to_status, detector, reason FROM changed
RETURNING {_HISTORY_COLS}
"""


async def set_statuses(db: Executor, *, changes: Sequence[tuple[uuid.UUID, ClientStatus, str,
                                                                 str | None]]
                       ) -> list[ClientStatusChange]:
    """`set_status` for many clients (distinct) at once: (client id, status, detector,
    reason) each. Answers the changes made."""
    if not changes:
        return []
    columns_ = list(zip(*changes, strict=True))
    made = many(ClientStatusChange, await db.fetch(_SET_STATUSES, *map(list, columns_)))
    for change in sorted(made, key=lambda c: c.id):
        await feed.record(db, organization_id=change.organization_id, kind="client.status",
                             data=feed.client_status_data(change))
    return made


async def upsert_many(db: Executor, *, organization_id: uuid.UUID,
                      entries: Sequence[tuple[str, str | None]]
                      ) -> dict[str, tuple[Client, bool]]:
    """`upsert` (with `push_name`) for many phones at once ((phone, push name) each; of a
    phone given twice the last push name given counts). Answers phone -> (client, created);
    creations and changes are in the feed with them, as `upsert` puts them."""
    wanted: dict[str, str | None] = {}
    for phone, push_name in entries:
        wanted[phone] = push_name if push_name is not None else wanted.get(phone)
    if not wanted:
        return {}
    # Read first: clients that are there with these names need no write (not even the row lock
    # an upsert takes, which would make the commit wait for the disk).
    found: dict[str, tuple[Client, bool]] = {}
    for client in await _by_phones(db, organization_id, list(wanted)):
        if wanted[client.phone] in (None, client.push_name):
            found[client.phone] = (client, False)
    rest = {phone: push for phone, push in wanted.items() if phone not in found}
    if rest:
        # One call writes them and their feed entries (`wad_upsert_clients`, atomic).
        for row in await db.fetch(
                "SELECT (r.client).*, r.created "
                "FROM wad_upsert_clients($1, $2::text[], $3::text[]) AS r",
                organization_id, list(rest), list(rest.values())):
            found[row["phone"]] = (returned(Client, row), bool(row["created"]))
        unchanged = [phone for phone in rest if phone not in found]
        if unchanged:
            for client in await _by_phones(db, organization_id, unchanged):
                found[client.phone] = (client, False)
    missing = [phone for phone in wanted if phone not in found]
    if missing:
        raise NotFound(f"clients {', '.join(missing)} vanished while being upserted")
    return found


async def _by_phones(db: Executor, organization_id: uuid.UUID, phones: list[str]) -> list[Client]:
    rows = await db.fetch(
        f"SELECT {_COLS} FROM clients WHERE organization_id = $1 AND phone = ANY($2::text[])",
        organization_id, phones)
    return many(Client, rows)
