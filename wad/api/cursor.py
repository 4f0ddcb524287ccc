"""Opaque page cursors for the read API.

A cursor is the key of the last row of a page (`wad.db.repo.read`), with what it is a cursor of:
the list (`kind`) and a digest of the query it came from (the organization or parent, the order
and the filters). It travels as URL-safe base64 of a JSON array, and callers must treat it as
opaque. A cursor that does not decode, or belongs to another list or query, is a 400 naming
`cursor`: paging on with other filters would silently skip or repeat rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import msgspec

from wad.api.errors import ApiError

VERSION = 1
MAX_LENGTH = 400
"""Longer text is not one of ours."""


def _scope_digest(scope: tuple[object, ...]) -> str:
    text = "\x1f".join("" if part is None else str(part) for part in scope)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def encode(kind: str, scope: tuple[object, ...], key: tuple[Any, ...]) -> str:
    """The cursor after the row with `key` in the list `kind` queried with `scope`."""
    raw = msgspec.json.encode([VERSION, kind, _scope_digest(scope), *key])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _bad(why: str) -> ApiError:
    return ApiError(400, "bad_cursor", f"`cursor`: {why}; start again without a cursor, "
                    "then pass each page's `nextCursor` unchanged", field="cursor")


def decode(text: str, kind: str, scope: tuple[object, ...], key_type: Any) -> Any:
    """The key in `text` (as `key_type`, a tuple type), a cursor of the list `kind` queried
    with `scope`; 400 otherwise."""
    if len(text) > MAX_LENGTH:
        raise _bad("not a cursor of this API (too long)")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        found = msgspec.json.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise _bad("not a cursor of this API") from None
    if not (isinstance(found, list) and len(found) >= 3 and found[0] == VERSION):
        raise _bad("not a cursor of this API")
    if found[1] != kind:
        raise _bad(f"a cursor of another list ({found[1]!s:.40}), not of {kind}")
    if found[2] != _scope_digest(scope):
        raise _bad("made for another query (another organization, parent, order or "
                   "filters)")
    try:
        return msgspec.convert(found[3:], key_type, strict=False)
    except msgspec.ValidationError:
        raise _bad("not a cursor of this API") from None
