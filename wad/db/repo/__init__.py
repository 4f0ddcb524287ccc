"""Repositories: plain SQL with `$n` parameters, one small module per table family.

Every function is keyword-only, takes an `Executor` first (the pool, or a connection inside the
caller's transaction) and answers rows as the Structs of `wad.db.models`. A missing row is `None`;
a violated invariant surfaces as the asyncpg error of the constraint that caught it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import msgspec

from wad.db.pool import Record

T = TypeVar("T", bound=msgspec.Struct)


def columns(model: type[msgspec.Struct], alias: str = "") -> str:
    """The SELECT list of a Struct's fields, so that SQL and Struct cannot drift apart."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + name for name in model.__struct_fields__)


def one(model: type[T], record: Record | None) -> T | None:
    """A record as a `model`, or None."""
    if record is None:
        return None
    return model(**{name: record[name] for name in model.__struct_fields__})


def many(model: type[T], records: Iterable[Record]) -> list[T]:
    """Records as `model`s, in order."""
    names = model.__struct_fields__
    return [model(**{name: r[name] for name in names}) for r in records]


def returned(model: type[T], record: Record | None) -> T:
    """The row an INSERT ... RETURNING must have answered."""
    row = one(model, record)
    if row is None:
        raise RuntimeError(f"expected a {model.__name__} row, the statement answered none")
    return row
