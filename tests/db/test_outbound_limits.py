"""The rate-window arithmetic (pure functions) and the organization's sending settings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from wad.db.pool import Database
from wad.db.repo import organizations as orgs_repo
from wad.errors import NotFound
from wad.org.outbound import settings as settings_mod
from wad.org.outbound.limits import (
    Pacing,
    Refusal,
    Window,
    door_check,
    in_window,
    next_send_at,
    retry_delay,
    windows,
)
from wad.org.outbound.settings import (
    RateLimitingPatch,
    SafetyPatch,
    SendSettings,
    SettingsInvalid,
    SettingsPatch,
)

T0 = datetime(2025, 7, 1, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


LIMITS = windows(per_minute=3, per_hour=5, per_day=8)


def test_a_send_leaves_the_window_exactly_its_length_later() -> None:
    sent = [at(0), at(10), at(20)]
    assert in_window(sent, at(20), timedelta(seconds=60)) == 3
    assert in_window(sent, at(59.999), timedelta(seconds=60)) == 3
    assert in_window(sent, at(60), timedelta(seconds=60)) == 2
    assert in_window(sent, at(5), timedelta(seconds=60)) == 1  # the future does not count


def test_next_send_waits_for_the_oldest_send_to_leave_the_minute() -> None:
    sent = [at(0), at(10), at(20)]
    assert next_send_at(sent[:2], at(20), in_flight=0, limits=LIMITS) == at(20)
    assert next_send_at(sent, at(20), in_flight=0, limits=LIMITS) == at(60)
    # A send in flight counts as happening now: the second oldest must leave too.
    assert next_send_at(sent, at(61), in_flight=1, limits=LIMITS) == at(70)
    # Sends in flight alone fill the minute: wait for one of them to finish.
    assert next_send_at([], at(0), in_flight=3, limits=LIMITS) is None


def test_next_send_keeps_the_hour_and_the_day() -> None:
    sent = [at(0), at(100), at(200), at(300), at(400)]
    assert next_send_at(sent, at(500), in_flight=0, limits=LIMITS) == at(3600)
    day = [at(h * 3600) for h in range(8)]
    assert next_send_at(day, at(8 * 3600), in_flight=0, limits=LIMITS) == at(86400)


def test_the_door_counts_queued_messages_and_names_the_reset() -> None:
    hour_and_day = LIMITS[1:]
    sent = [at(0), at(600), at(1200)]
    assert door_check(sent, at(1800), pending=1, wanted=1, limits=hour_and_day) is None
    refusal = door_check(sent, at(1800), pending=2, wanted=1, limits=hour_and_day)
    # 3 sent + 2 queued fill the hour; room once the send at 0 has left it.
    assert refusal == Refusal(window="hour", limit=5, remaining=0, reset_at=at(3600))
    assert refusal.retry_after_s(at(1800)) == 1800
    assert refusal.message(at(1800)) == (
        "hour limit reached: at most 5 messages an hour; 0 remaining; room again at "
        "2025-07-01T10:00:00+00:00 (in 1800 s)")
    # Four more do not fit while two would: room when the two oldest have left.
    refusal = door_check(sent, at(1800), pending=0, wanted=4, limits=hour_and_day)
    assert refusal is not None
    assert (refusal.remaining, refusal.reset_at) == (2, at(4200))
    # Queued messages alone fill it: they leave a whole window after they are sent, from now.
    refusal = door_check([], at(0), pending=5, wanted=1, limits=hour_and_day)
    assert refusal is not None
    assert refusal.reset_at == at(3600)


def test_the_day_refuses_when_the_hour_has_room() -> None:
    sent = [at(h * 3600) for h in range(8)]
    refusal = door_check(sent, at(8 * 3600), pending=0, wanted=1, limits=LIMITS[1:])
    assert refusal == Refusal(window="day", limit=8, remaining=0, reset_at=at(86400))
    assert refusal.retry_after_s(at(8 * 3600)) == 16 * 3600


def test_retry_delays_double_from_two_seconds() -> None:
    assert [retry_delay(n, initial_s=2.0) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]


# -- settings -----------------------------------------------------------------------------------


def test_defaults_are_the_conservative_ones() -> None:
    s = settings_mod.from_document({})
    assert s.as_document() == {
        "rateLimiting": {"messagesPerMinute": 10, "messagesPerHour": 100, "messagesPerDay": 500,
                         "concurrency": 3},
        "safety": {"enableMassSending": False, "requireConfirmation": True,
                   "maxBatchSize": 50}}
    assert [(w.name, w.limit) for w in s.windows()] == [("minute", 10), ("hour", 100),
                                                        ("day", 500)]


@pytest.mark.parametrize(("document", "field", "message"), [
    ({"rateLimiting": {"messagesPerMinute": 21}}, "rateLimiting.messagesPerMinute",
     "Expected `int` <= 20"),
    ({"rateLimiting": {"messagesPerMinute": 20, "messagesPerHour": 19}},
     "rateLimiting.messagesPerHour", "must be at least messagesPerMinute (20)"),
    ({"rateLimiting": {"messagesPerHour": 100, "messagesPerDay": 99}},
     "rateLimiting.messagesPerDay", "must be at least messagesPerHour (100)"),
    ({"rateLimiting": {"concurrency": 11}}, "rateLimiting.concurrency", "Expected `int` <= 10"),
    ({"rateLimiting": {"concurrency": 0}}, "rateLimiting.concurrency", "Expected `int` >= 1"),
    ({"rateLimiting": {"concurrency": "3"}}, "rateLimiting.concurrency",
     "Expected `int`, got `str`"),
    ({"safety": {"maxBatchSize": 101}}, "safety.maxBatchSize", "Expected `int` <= 100"),
    ({"safety": {"massSending": True}}, "safety.massSending", "unknown field"),
])
def test_invalid_settings_name_the_field(document: dict[str, object], field: str,
                                         message: str) -> None:
    with pytest.raises(SettingsInvalid) as caught:
        settings_mod.from_document(document)
    assert caught.value.field == field
    assert caught.value.reason == message


def test_a_partial_update_merges_and_is_validated_whole() -> None:
    current = SendSettings()
    merged = settings_mod.merge(current, SettingsPatch(
        rate_limiting=RateLimitingPatch(messages_per_minute=15),
        safety=SafetyPatch(enable_mass_sending=True)))
    assert merged.rate_limiting.messages_per_minute == 15
    assert merged.rate_limiting.messages_per_hour == 100  # kept
    assert merged.safety.enable_mass_sending is True
    assert merged.safety.max_batch_size == 50  # kept
    with pytest.raises(SettingsInvalid) as caught:
        settings_mod.merge(merged, SettingsPatch(
            rate_limiting=RateLimitingPatch(messages_per_day=14)))
    assert caught.value.field == "rateLimiting.messagesPerDay"
    patch = msgspec.json.decode(b'{"rateLimiting": {"messagesPerHour": 200}}', type=SettingsPatch)
    assert settings_mod.merge(merged, patch).rate_limiting.messages_per_hour == 200


async def test_update_keeps_the_crms_other_settings(db: Database) -> None:
    org = await orgs_repo.create(db, name="Issyk-Kul Tours",
                                 settings={"timezone": "Asia/Bishkek",
                                           "safety": {"maxBatchSize": 20}})
    assert (await settings_mod.load(db, org.id)).safety.max_batch_size == 20
    await settings_mod.update(db, org.id, SettingsPatch(
        rate_limiting=RateLimitingPatch(concurrency=5)))
    stored = await orgs_repo.get(db, organization_id=org.id)
    assert stored is not None
    assert stored.settings["timezone"] == "Asia/Bishkek"
    assert stored.settings["rateLimiting"]["concurrency"] == 5
    assert stored.settings["safety"]["maxBatchSize"] == 20
    with pytest.raises(SettingsInvalid):
        await settings_mod.update(db, org.id, SettingsPatch(
            rate_limiting=RateLimitingPatch(messages_per_hour=5)))
    unchanged = await orgs_repo.get(db, organization_id=org.id)
    assert unchanged is not None
    assert unchanged.settings == stored.settings  # nothing stored


async def test_settings_stored_around_the_api_fall_back_to_the_defaults(db: Database) -> None:
    org = await orgs_repo.create(db, name="A", settings={"rateLimiting": {"concurrency": 99}})
    assert await settings_mod.load(db, org.id) == SendSettings()
    with pytest.raises(NotFound):
        await settings_mod.load(db, uuid.uuid4())


def test_a_pacing_gap_stays_between_its_bounds() -> None:
    pacing = Pacing(jitter=0.25)
    assert pacing.gap(20, 0.0) == timedelta(seconds=3)
    assert pacing.gap(20, 0.999999).total_seconds() == pytest.approx(2.25, abs=1e-4)
    assert pacing.gap(10, 0.5) == timedelta(seconds=5.25)
    assert pacing.window() == Window("burst", timedelta(seconds=10), 5)
