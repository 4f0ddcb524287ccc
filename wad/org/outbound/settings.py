"""Sending settings: each organization's limits (in `organizations.settings`) and the daemon's
own knobs of the outbound actor (the `[outbound]` table of the config file).

An organization's settings are the CRM's document, so its keys keep the CRM's names:

    {"rateLimiting": {"messagesPerMinute": 10, "messagesPerHour": 100, "messagesPerDay": 500,
                      "concurrency": 3},
     "safety": {"enableMassSending": false, "requireConfirmation": true, "maxBatchSize": 50}}

Missing keys take these (conservative) defaults. Decoding is validation; the rules across fields
(hour >= minute, day >= hour) are checked by `validate`. Other keys of `organizations.settings`
belong to the CRM and are kept as they are.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from wad import log
from wad.db.pool import Database, Executor
from wad.db.repo import organizations as orgs_repo
from wad.errors import NotFound, WadError, validation_problem
from wad.org.outbound.limits import Window, windows

_log = log.get("outbound")

MAX_PER_MINUTE = 20
MAX_PER_HOUR = 60 * MAX_PER_MINUTE
MAX_PER_DAY = 24 * MAX_PER_HOUR
MAX_BULK = 100
"""The most messages one bulk request may carry (the API refuses more)."""

PerMinute = Annotated[int, Meta(ge=1, le=MAX_PER_MINUTE)]
PerHour = Annotated[int, Meta(ge=1, le=MAX_PER_HOUR)]
PerDay = Annotated[int, Meta(ge=1, le=MAX_PER_DAY)]
Concurrency = Annotated[int, Meta(ge=1, le=10)]
BatchSize = Annotated[int, Meta(ge=1, le=MAX_BULK)]

SETTINGS_KEYS = ("rateLimiting", "safety")
"""The keys of `organizations.settings` that this module owns."""


class SettingsInvalid(WadError):
    """An organization's sending settings break a rule; `field` is its dotted name
    (`rateLimiting.messagesPerHour`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"`{field}`: {message}")
        self.field = field
        self.reason = message


class RateLimiting(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, rename="camel",
                   frozen=True):
    """How fast an organization may send."""

    messages_per_minute: PerMinute = 10
    messages_per_hour: PerHour = 100
    messages_per_day: PerDay = 500
    concurrency: Concurrency = 3
    """Sends waiting for WhatsApp's confirmation at the same time."""


class Safety(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, rename="camel",
             frozen=True):
    """What bulk sending needs."""

    enable_mass_sending: bool = False
    require_confirmation: bool = True
    """A batch larger than `maxBatchSize` needs `confirm: true`."""
    max_batch_size: BatchSize = 50


class SendSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, rename="camel",
                   frozen=True):
    """An organization's sending settings (its `rateLimiting` and `safety`)."""

    rate_limiting: RateLimiting = msgspec.field(default_factory=RateLimiting)
    safety: Safety = msgspec.field(default_factory=Safety)

    def windows(self) -> tuple[Window, ...]:
        r = self.rate_limiting
        return windows(per_minute=r.messages_per_minute, per_hour=r.messages_per_hour,
                       per_day=r.messages_per_day)

    def door_windows(self) -> tuple[Window, ...]:
        """The windows that refuse at the door (hour and day); the minute is paced."""
        return tuple(w for w in self.windows() if w.name != "minute")

    def day_window(self) -> tuple[Window, ...]:
        return tuple(w for w in self.windows() if w.name == "day")

    def as_document(self) -> dict[str, Any]:
        """The JSON form stored in `organizations.settings` (the CRM's key names)."""
        document: dict[str, Any] = msgspec.to_builtins(self)
        return document


class RateLimitingPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, rename="camel"):
    """Part of `rateLimiting` to change; absent keys keep their value."""

    messages_per_minute: PerMinute | UnsetType = UNSET
    messages_per_hour: PerHour | UnsetType = UNSET
    messages_per_day: PerDay | UnsetType = UNSET
    concurrency: Concurrency | UnsetType = UNSET


class SafetyPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, rename="camel"):
    """Part of `safety` to change; absent keys keep their value."""

    enable_mass_sending: bool | UnsetType = UNSET
    require_confirmation: bool | UnsetType = UNSET
    max_batch_size: BatchSize | UnsetType = UNSET


class SettingsPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, rename="camel"):
    """Body of `PUT /api/whatsapp/settings/{org}`: a partial update, merged into the current
    settings (or the defaults)."""

    rate_limiting: RateLimitingPatch | UnsetType = UNSET
    safety: SafetyPatch | UnsetType = UNSET


def validate(settings: SendSettings) -> SendSettings:
    """The settings, if the rules across fields hold; `SettingsInvalid` naming the field else."""
    r = settings.rate_limiting
    if r.messages_per_hour < r.messages_per_minute:
        raise SettingsInvalid("rateLimiting.messagesPerHour",
                              f"must be at least messagesPerMinute ({r.messages_per_minute})")
    if r.messages_per_day < r.messages_per_hour:
        raise SettingsInvalid("rateLimiting.messagesPerDay",
                              f"must be at least messagesPerHour ({r.messages_per_hour})")
    return settings


def _patched(current: msgspec.Struct, patch: msgspec.Struct) -> Any:
    changes = {name: getattr(patch, name) for name in patch.__struct_fields__
               if getattr(patch, name) is not UNSET}
    return msgspec.structs.replace(current, **changes)


def merge(current: SendSettings, patch: SettingsPatch) -> SendSettings:
    """`current` with the patch's values, validated."""
    merged = current
    if patch.rate_limiting is not UNSET:
        merged = msgspec.structs.replace(
            merged, rate_limiting=_patched(merged.rate_limiting, patch.rate_limiting))
    if patch.safety is not UNSET:
        merged = msgspec.structs.replace(merged, safety=_patched(merged.safety, patch.safety))
    return validate(merged)


def describe(exc: msgspec.ValidationError) -> SettingsInvalid:
    """msgspec's error (`... - at `$.rateLimiting.concurrency``) as `SettingsInvalid`."""
    message, path = validation_problem(exc)
    return SettingsInvalid(path or "settings", message)


def from_document(document: dict[str, Any]) -> SendSettings:
    """The sending settings in an organization's settings document (defaults for what is
    missing); `SettingsInvalid` when what is there is invalid."""
    mine = {key: document[key] for key in SETTINGS_KEYS if key in document}
    try:
        return validate(msgspec.convert(mine, SendSettings))
    except msgspec.ValidationError as exc:
        raise describe(exc) from None


def effective(document: dict[str, Any]) -> SendSettings:
    """Like `from_document`, but never fails: stored settings that no longer validate (written
    around the API) fall back to the defaults, conservatively, and say so in the log."""
    try:
        return from_document(document)
    except SettingsInvalid as exc:
        _log.warning("stored sending settings are invalid; using the defaults", error=str(exc))
        return SendSettings()


async def load(db: Executor, organization_id: uuid.UUID) -> SendSettings:
    """The organization's effective sending settings; `NotFound` for no such organization."""
    org = await orgs_repo.get(db, organization_id=organization_id)
    if org is None:
        raise NotFound(f"no such organization: {organization_id}")
    return effective(org.settings)


async def update(db: Database, organization_id: uuid.UUID, patch: SettingsPatch) -> SendSettings:
    """Merge `patch` into the organization's settings and store them (the CRM's other keys are
    kept). Raises `SettingsInvalid` (nothing stored) or `NotFound`."""
    async with db.transaction() as tx:
        document = await orgs_repo.settings_for_update(tx, organization_id=organization_id)
        if document is None:
            raise NotFound(f"no such organization: {organization_id}")
        merged = merge(effective(document), patch)
        document.update(merged.as_document())
        await orgs_repo.update_settings(tx, organization_id=organization_id, settings=document)
    return merged
