"""Who is asking, and may they: bearer tokens, roles, tenants and the control socket.

A token is `wad_` and 43 random URL-safe characters, shown once at creation; the database keeps
only its SHA-256. Every request to `/api/...` is authenticated before any route runs:

- on the unix control socket the caller is the super admin (the socket's file mode, 0660, is the
  protection);
- on TCP the caller presents `Authorization: Bearer <token>`; a missing, unknown or revoked token
  is 401.

Routes then call `authorize` (or use `org_route`), which answers 403 when the token belongs to
another organization or its role is too low. The 403 for another organization says the same
thing whether that organization exists or not.

A `METRICS` token belongs to no organization and has no rank: it reads `GET /metrics` and is
refused (403) on every `/api/` path before any route runs.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from quart import g, request

from wad.api.errors import ApiError
from wad.api.token_cache import TokenCache
from wad.db.models import Role
from wad.db.pool import Database
from wad.db.repo import tokens as tokens_repo

TOKEN_PREFIX = "wad_"
_SHOWN_PREFIX_LEN = 12  # "wad_" and 8 random characters: enough to recognise a token in a list

# Higher ranks include the powers of lower ones; METRICS has none of them.
_RANK: dict[str, int] = {"METRICS": 0, "VIEWER": 1, "AGENT": 2, "ADMIN": 3, "SUPER_ADMIN": 4}


def new_token() -> tuple[str, bytes, str]:
    """A fresh token: (the token to show once, its hash to store, its recognisable prefix)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_token(token), token[:_SHOWN_PREFIX_LEN]


def hash_token(token: str) -> bytes:
    """What the database stores and looks tokens up by."""
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    role: Role
    organization_id: uuid.UUID | None  # None for the super admin
    token_id: uuid.UUID | None  # None on the control socket
    via: Literal["socket", "token"]

    @property
    def is_super_admin(self) -> bool:
        return self.role == "SUPER_ADMIN"

    def describe(self) -> str:
        """Who this is, for logs and the audit trail: `control socket` or `token <id>`."""
        return "control socket" if self.token_id is None else f"token {self.token_id}"


SOCKET_ADMIN = Principal(role="SUPER_ADMIN", organization_id=None, token_id=None, via="socket")


def on_control_socket(scope: Mapping[str, Any]) -> bool:
    """True for a request that arrived on a unix socket.

    Hypercorn fills the ASGI scope's `server` with `(host, port)` for TCP binds and with None for
    unix binds (it has no address family it can express). A scope without the key at all (an
    in-process test client, another server) is not trusted as the socket."""
    return "server" in scope and scope["server"] is None


_UNAUTHENTICATED = {"WWW-Authenticate": 'Bearer realm="wad"'}


async def identify(tokens: TokenCache, *, on_socket: bool, authorization: str) -> Principal:
    """The caller of a request that came on the control socket (`on_socket`) or with this
    `Authorization` header ("" when absent), or 401. Tokens are looked up through the cache
    (`wad.api.token_cache`: a revoked token is refused within a second everywhere)."""
    if on_socket:
        return SOCKET_ADMIN
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if not authorization:
        raise ApiError(401, "unauthenticated", "this endpoint needs an `Authorization: Bearer "
                       "<token>` header", headers=_UNAUTHENTICATED)
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthenticated", "the Authorization header must be `Bearer <token>`",
                       headers=_UNAUTHENTICATED)
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        raise ApiError(401, "unauthenticated", "unknown or revoked token",
                       headers=_UNAUTHENTICATED)
    digest = hash_token(token)
    found = await tokens.use(digest)
    # The index lookup found the row; the comparison that decides is constant-time.
    if found is None or not hmac.compare_digest(found.token_hash, digest):
        raise ApiError(401, "unauthenticated", "unknown or revoked token",
                       headers=_UNAUTHENTICATED)
    return Principal(role=found.token.role, organization_id=found.token.organization_id,
                     token_id=found.token.id, via="token")


async def identify_api(tokens: TokenCache, *, on_socket: bool, authorization: str
                       ) -> Principal:
    """`identify` for an `/api/` request: also 403 for a token that may not use the API at
    all (a METRICS token)."""
    principal = await identify(tokens, on_socket=on_socket, authorization=authorization)
    if principal.role == "METRICS":
        raise ApiError(403, "forbidden", "a METRICS token may read /metrics only")
    return principal


async def authenticate(tokens: TokenCache) -> Principal:
    """The caller of the current Quart request (`identify`)."""
    return await identify(tokens, on_socket=on_control_socket(request.scope),
                          authorization=request.headers.get("Authorization", ""))


async def authenticate_api(tokens: TokenCache) -> Principal:
    """The caller of the current Quart `/api/` request (`identify_api`)."""
    return await identify_api(tokens, on_socket=on_control_socket(request.scope),
                              authorization=request.headers.get("Authorization", ""))


async def still_valid(db: Database, principal: Principal) -> bool:
    """Whether `principal` may still act: its token is not revoked (the socket always may).
    For long answers (the event stream), which outlive the check made at their start."""
    if principal.token_id is None:
        return True
    return await tokens_repo.is_active(db, token_id=principal.token_id)


def current() -> Principal:
    """The principal that `authenticate` stored for this request."""
    principal: Principal | None = getattr(g, "principal", None)
    if principal is None:  # a route outside /api/ asked; never expected
        raise ApiError(401, "unauthenticated", "not authenticated")
    return principal


def has_rank(principal: Principal, min_role: Role) -> bool:
    return _RANK[principal.role] >= _RANK[min_role]


def permit(principal: Principal, org_id: uuid.UUID | None, min_role: Role) -> Principal:
    """`principal`, if it may act with `min_role` on `org_id` (None: not organization-scoped).
    403 otherwise; the other-organization answer does not depend on whether it exists."""
    if principal.is_super_admin:
        return principal
    if min_role == "SUPER_ADMIN" or org_id is None:
        raise ApiError(403, "forbidden", "this needs a super admin token")
    if principal.organization_id != org_id:
        raise ApiError(403, "forbidden", "this token may not act on that organization")
    if not has_rank(principal, min_role):
        raise ApiError(403, "forbidden", f"this needs a token with role {min_role} or higher; "
                       f"this one is {principal.role}")
    return principal


def authorize(org_id: uuid.UUID | None, min_role: Role) -> Principal:
    """The current request's caller, if `permit` lets it act with `min_role` on `org_id`."""
    return permit(current(), org_id, min_role)


def org_of_body(principal: Principal, requested: uuid.UUID | None, min_role: Role
                ) -> uuid.UUID:
    """For bodies with an optional `organizationId`: the organization named, else the
    caller's own (a super admin must name one: 400), permitted for `min_role`."""
    org_id = requested or principal.organization_id
    if org_id is None:
        raise ApiError(400, "invalid", "`organizationId`: a super admin must name the "
                       "organization", field="organizationId")
    permit(principal, org_id, min_role)
    return org_id


def body_org(requested: uuid.UUID | None, min_role: Role) -> uuid.UUID:
    """`org_of_body` for the current request's caller."""
    return org_of_body(current(), requested, min_role)


def parse_uuid(value: str, *, what: str) -> uuid.UUID:
    """A path segment as a UUID; a malformed one is simply not found."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ApiError(404, "not_found", f"no such {what}: {value!r} is not a valid id") from None


Handler = Callable[..., Awaitable[Any]]


def org_route(min_role: Role) -> Callable[[Handler], Handler]:
    """For routes with an `{org}` path segment: parse it, authorize the caller, and pass
    `org_id` (a UUID) to the handler instead of `org`."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(*args: Any, org: str, **kwargs: Any) -> Any:
            org_id = parse_uuid(org, what="organization")
            authorize(org_id, min_role)
            return await handler(*args, org_id=org_id, **kwargs)

        return wrapper

    return decorate


def authorize_metrics() -> Principal:
    """The caller, if it may read the metrics (the super admin or a METRICS token); else 403."""
    principal = current()
    if principal.role not in ("SUPER_ADMIN", "METRICS"):
        raise ApiError(403, "forbidden", "the metrics need a METRICS or SUPER_ADMIN token")
    return principal


def super_admin_route(handler: Handler) -> Handler:
    """For routes only the super admin may call."""

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        authorize(None, "SUPER_ADMIN")
        return await handler(*args, **kwargs)

    return wrapper
