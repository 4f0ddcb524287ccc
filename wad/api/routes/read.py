"""The read API: what wad stores, for the CRM (issue 18). Any token of the organization may read
it; a `VIEWER`'s answers carry no message text (`body`, `caption`, a file's name) and no status
change reasons (they quote the messages).

- `GET /api/whatsapp/clients/{org}`: clients, filtered by `phone`, `name`, `status`, `language`,
  `updatedSince`;
- `GET /api/whatsapp/clients/{org}/{client}`: one client with its conversations;
- `GET /api/whatsapp/clients/{org}/{client}/status-history`: its moves in the sales funnel;
- `GET /api/whatsapp/conversations/{org}/{conversation}`: one conversation;
- `GET /api/whatsapp/conversations/{org}/{conversation}/messages`: its messages;
- `GET /api/whatsapp/import/{org}/runs`: the import runs.

Lists are pages of `limit` rows (default 50, at most 200) in a fixed order, `newest` first by
default or `oldest` first; each answer's `nextCursor` (null on the last page) continues the
same query (see `wad.api.cursor` and `wad.db.repo.read` for why paging never skips or repeats a
row). Every body is camelCase.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta
from quart import Blueprint, Response
from quart_schema import tag

from wad.api import auth, cursor
from wad.api.auth import Handler, org_route
from wad.api.context import current
from wad.api.errors import ApiError
from wad.api.routes.whatsapp import require_org
from wad.api.validation import query, reply, responds
from wad.db.models import (
    E164_PATTERN,
    Client,
    ClientColumns,
    ClientStatus,
    ClientStatusChange,
    Conversation,
    ConversationColumns,
    ImportRun,
    ImportRunColumns,
    Message,
    MessageColumns,
    StatusChangeColumns,
)
from wad.db.pool import Database
from wad.db.repo import answers as answers_repo
from wad.db.repo import read as read_repo
from wad.db.repo.read import ClientKey, MessageKey, RunKey
from wad.whatsapp import phone as phone_mod

bp = Blueprint("read", __name__, url_prefix="/api/whatsapp")

Order = Literal["newest", "oldest"]
DEFAULT_LIMIT = 50
MAX_LIMIT = 200

Limit = Annotated[int, Meta(ge=1, le=MAX_LIMIT, description="Rows per page")]
CursorText = Annotated[str, Meta(min_length=1, max_length=cursor.MAX_LENGTH, description=(
    "The previous page's `nextCursor`, unchanged"))]
OrderParam = Annotated[Order, Meta(description="`newest` first (the default) or `oldest` first")]


# Queries ------------------------------------------------------------------------------------


class PageQuery(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """The query of every list: how many, where to go on from, which way."""

    limit: Limit = DEFAULT_LIMIT
    cursor: CursorText | None = None
    order: OrderParam = "newest"


class ClientsQuery(PageQuery, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """The query of `GET /api/whatsapp/clients/{org}`: every filter given must match."""

    phone: Annotated[str, Meta(min_length=1, max_length=40, description=(
        "The phone number, international format (`%2B996555123456` in a URL: a bare `+` "
        "reads as a space, which is also understood)"))] | None = None
    name: Annotated[str, Meta(min_length=1, max_length=200, description=(
        "Text contained in the name, push name or saved name (case ignored)"))] | None = None
    status: ClientStatus | None = None
    language: Annotated[str, Meta(pattern=r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$",
                                  max_length=35, description=(
        "The preferred language, as stored (`ru`, `ky`, `en`, ...)"))] | None = None
    updated_since: Annotated[datetime, Meta(tz=True, description=(
        "Changed at or after this time (ISO 8601 with a time zone)"))] | None = None


# Answers ------------------------------------------------------------------------------------


class Out(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Base of the read API's answers: camelCase field names, immutable like the rows whose
    columns most of them show (`wad.db.models`, `...Columns`)."""


class ClientOut(ClientColumns, Out, frozen=True, kw_only=True, rename="camel"):
    """A client of the organization."""


class ClientPage(Out, frozen=True, kw_only=True, rename="camel"):
    clients: list[ClientOut]
    next_cursor: str | None
    """Null on the last page."""


class ConversationOut(ConversationColumns, Out, frozen=True, kw_only=True, rename="camel"):
    """A conversation, with how fast the client's messages were answered (`docs/api.md`,
    "Time to first answer")."""

    first_answer_seconds: float | None
    """From the conversation's first client message to the first answer; null until then."""
    last_answer_seconds: float | None
    """The same for the latest answered question."""
    awaiting_answer_since: datetime | None
    """The time of the client's first message still waiting for an answer; null when none."""


class ClientDetail(ClientOut, frozen=True, kw_only=True, rename="camel"):
    """A client with its conversations, the newest first (at most 100)."""

    conversations: list[ConversationOut]
    more_conversations: bool
    """True when the client has more conversations than listed."""


class MessageOut(MessageColumns, Out, frozen=True, kw_only=True, rename="camel"):
    """A stored message. `body` and `caption` are null for a VIEWER token (and `media` lacks
    the file's name)."""


class MessagePage(Out, frozen=True, kw_only=True, rename="camel"):
    messages: list[MessageOut]
    next_cursor: str | None


class StatusChangeOut(StatusChangeColumns, Out, frozen=True, kw_only=True, rename="camel"):
    """A move of the client in the sales funnel, by which detector and why (`reason` is null
    for a VIEWER token: it may quote the client's messages)."""


class StatusHistoryPage(Out, frozen=True, kw_only=True, rename="camel"):
    changes: list[StatusChangeOut]
    next_cursor: str | None


class ImportRunOut(ImportRunColumns, Out, frozen=True, kw_only=True, rename="camel"):
    """One historical import: its source, state and counts."""


class ImportRunPage(Out, frozen=True, kw_only=True, rename="camel"):
    runs: list[ImportRunOut]
    next_cursor: str | None


# Helpers ------------------------------------------------------------------------------------


def _db() -> Database:
    db = current().db
    return db


def _reads_content() -> bool:
    """Whether the caller may read message text (AGENT and above)."""
    return auth.has_rank(auth.current(), "AGENT")


def _phone(text: str) -> str:
    """The filter's phone number in E.164; 400 when it is not one."""
    try:
        return phone_mod.normalize(text)
    except phone_mod.InvalidPhoneNumber as exc:
        compact = "".join(text.split())
        compact = compact if compact.startswith("+") else "+" + compact
        if re.fullmatch(E164_PATTERN, compact):  # stored as WhatsApp gave it
            return compact
        raise ApiError(400, "invalid", f"`phone`: {exc}", field="phone") from None


def _shown(row: msgspec.Struct, out: type[msgspec.Struct]) -> dict[str, Any]:
    """The values of `row` for the fields of `out` (which `row` has too), by name."""
    return {name: getattr(row, name) for name in out.__struct_fields__}


def _client_out(row: Client) -> ClientOut:
    return ClientOut(**_shown(row, ClientOut))


def _conversation_out(row: Conversation, times: answers_repo.AnswerTimes | None
                      ) -> ConversationOut:
    return ConversationOut(
        **_shown(row, ConversationColumns),
        first_answer_seconds=times.first_answer_seconds if times else None,
        last_answer_seconds=times.last_answer_seconds if times else None,
        awaiting_answer_since=times.awaiting_answer_since if times else None)


def _message_out(row: Message, content: bool) -> MessageOut:
    media = row.media
    if not content and media is not None:
        media = {k: v for k, v in media.items() if k != "filename"}
    return MessageOut(**{**_shown(row, MessageOut), "body": row.body if content else None,
                         "caption": row.caption if content else None, "media": media})


def _change_out(row: ClientStatusChange, content: bool) -> StatusChangeOut:
    return StatusChangeOut(**{**_shown(row, StatusChangeOut),
                              "reason": row.reason if content else None})


def _run_out(row: ImportRun) -> ImportRunOut:
    return ImportRunOut(**_shown(row, ImportRunOut))


def _read_route(path: str, answer: type[Out], *, errors: tuple[int, ...],
                query_model: type[PageQuery] | None = None,
                tags: list[str] | None = None) -> Callable[[Handler], Handler]:
    """A route of the read API: `GET path` answering `answer` (documented with its `errors`),
    tagged `read` (or `tags`), open to any token of the organization (`VIEWER` and above), and
    given its `query` decoded from the query string when `query_model` names one."""

    def decorate(handler: Handler) -> Handler:
        if query_model is not None:
            handler = query(query_model)(handler)
        handler = responds(answer, errors=errors)(org_route("VIEWER")(handler))
        return bp.get(path)(tag(tags or ["read"])(handler))

    return decorate


async def _org_exists(org_id: uuid.UUID) -> None:
    """404 for an organization that does not exist. Only the super admin can ask about one:
    an organization's token goes with its organization."""
    if auth.current().is_super_admin:
        await require_org(org_id)


async def _client(org_id: uuid.UUID, client: str) -> Client:
    found = await read_repo.client(_db(), organization_id=org_id,
                                   client_id=auth.parse_uuid(client, what="client"))
    if found is None:
        raise ApiError(404, "not_found", f"no such client in this organization: {client}")
    return found


async def _conversation(org_id: uuid.UUID, conversation: str) -> Conversation:
    found = await read_repo.conversation(
        _db(), organization_id=org_id,
        conversation_id=auth.parse_uuid(conversation, what="conversation"))
    if found is None:
        raise ApiError(404, "not_found",
                       f"no such conversation in this organization: {conversation}")
    return found


# Routes -------------------------------------------------------------------------------------


@_read_route("/clients/<org>", ClientPage, errors=(400, 401, 403, 404), query_model=ClientsQuery)
async def list_clients(org_id: uuid.UUID, query: ClientsQuery) -> Response:
    """The organization's clients by creation, newest first (or `order=oldest`), that match
    every filter given. 400 for a bad filter or cursor."""
    await _org_exists(org_id)
    number = _phone(query.phone) if query.phone is not None else None
    since = query.updated_since
    scope = (org_id, query.order, number, query.name, query.status, query.language,
             since.isoformat() if since else None)
    after: ClientKey | None = (cursor.decode(query.cursor, "clients", scope, ClientKey)
             if query.cursor is not None else None)
    page = await read_repo.clients(
        _db(), organization_id=org_id, order=query.order, limit=query.limit, after=after,
        phone=number, name=query.name, status=query.status, language=query.language,
        updated_since=since)
    last = page.rows[-1] if page.rows else None
    return reply(ClientPage(
        clients=[_client_out(c) for c in page.rows],
        next_cursor=cursor.encode("clients", scope, (last.created_at, last.id))
        if page.more and last else None))


@_read_route("/clients/<org>/<client>", ClientDetail, errors=(401, 403, 404))
async def get_client(org_id: uuid.UUID, client: str) -> Response:
    """One client with its conversations (the newest first, at most 100) and their answer
    times. 404 for a client of another organization."""
    found = await _client(org_id, client)
    db = _db()
    conversations = await read_repo.conversations_of(db, client_id=found.id)
    times = await answers_repo.for_conversations(
        db, conversation_ids=[c.id for c in conversations.rows])
    out = _client_out(found)
    return reply(ClientDetail(
        **_shown(out, ClientOut),
        conversations=[_conversation_out(c, times.get(c.id)) for c in conversations.rows],
        more_conversations=conversations.more))


@_read_route("/clients/<org>/<client>/status-history", StatusHistoryPage,
             errors=(400, 401, 403, 404), query_model=PageQuery)
async def status_history(org_id: uuid.UUID, client: str, query: PageQuery) -> Response:
    """The client's moves in the sales funnel, the newest first (or `order=oldest`)."""
    client_id = auth.parse_uuid(client, what="client")
    scope = (org_id, client_id, query.order)
    after: int | None = (cursor.decode(query.cursor, "status-history", scope, tuple[int])[0]
             if query.cursor is not None else None)
    page = await read_repo.status_history(_db(), organization_id=org_id, client_id=client_id,
                                          order=query.order, limit=query.limit, after=after)
    if not page.rows:  # none, or no such client here: one more query tells which
        await _client(org_id, client)
    content = _reads_content()
    return reply(StatusHistoryPage(
        changes=[_change_out(c, content) for c in page.rows],
        next_cursor=cursor.encode("status-history", scope, (page.rows[-1].id,))
        if page.more else None))


@_read_route("/conversations/<org>/<conversation>", ConversationOut, errors=(401, 403, 404))
async def get_conversation(org_id: uuid.UUID, conversation: str) -> Response:
    """One conversation with its answer times."""
    found = await _conversation(org_id, conversation)
    times = await answers_repo.for_conversations(_db(), conversation_ids=[found.id])
    return reply(_conversation_out(found, times.get(found.id)))


@_read_route("/conversations/<org>/<conversation>/messages", MessagePage,
             errors=(400, 401, 403, 404), query_model=PageQuery)
async def list_messages(org_id: uuid.UUID, conversation: str, query: PageQuery) -> Response:
    """The conversation's messages by WhatsApp's time, newest first (or `order=oldest`). A
    VIEWER's messages carry no text."""
    conversation_id = auth.parse_uuid(conversation, what="conversation")
    scope = (org_id, conversation_id, query.order)
    after: MessageKey | None = (cursor.decode(query.cursor, "messages", scope, MessageKey)
             if query.cursor is not None else None)
    page = await read_repo.messages(_db(), organization_id=org_id,
                                    conversation_id=conversation_id, order=query.order,
                                    limit=query.limit, after=after)
    if not page.rows:  # none, or no such conversation here: one more query tells which
        await _conversation(org_id, conversation)
    content = _reads_content()
    last = page.rows[-1] if page.rows else None
    return reply(MessagePage(
        messages=[_message_out(m, content) for m in page.rows],
        next_cursor=cursor.encode("messages", scope, (last.sent_at, last.created_at, last.id))
        if page.more and last else None))


@_read_route("/import/<org>/runs", ImportRunPage,
             errors=(400, 401, 403, 404), query_model=PageQuery, tags=["read", "import"])
async def import_runs(org_id: uuid.UUID, query: PageQuery) -> Response:
    """The organization's historical imports, the newest first (or `order=oldest`)."""
    await _org_exists(org_id)
    scope = (org_id, query.order)
    after: RunKey | None = (cursor.decode(query.cursor, "import-runs", scope, RunKey)
             if query.cursor is not None else None)
    page = await read_repo.import_runs(_db(), organization_id=org_id, order=query.order,
                                       limit=query.limit, after=after)
    last = page.rows[-1] if page.rows else None
    return reply(ImportRunPage(
        runs=[_run_out(r) for r in page.rows],
        next_cursor=cursor.encode("import-runs", scope, (last.started_at, last.id))
        if page.more and last else None))
