"""The OpenRouter status detector and agent, against a local server speaking OpenRouter's
chat-completions protocol on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import trio
import wad_heuristic_status
import wad_openrouter
from quart import Response
from structlog.testing import capture_logs

from tests.support.openrouter import FakeOpenRouter, completion
from tests.support.plugin_helpers import client, message, serving
from wad import config as wad_config
from wad.errors import ConfigError
from wad.payloads import FUNNEL, AgentReply, StatusDecision
from wad.plugins import (
    PluginManager,
    PluginSettings,
    agent_reply,
    detect_status,
    get_plugin_manager,
)

KEY = "sk-or-test-0123456789"






@pytest.fixture
async def openrouter() -> AsyncIterator[tuple[FakeOpenRouter, str]]:
    fake = FakeOpenRouter()
    async with serving(fake.app) as url:
        yield fake, url + "/api/v1"


def manager(base_url: str, *, heuristic: bool = False, **config: Any) -> PluginManager:
    settings = {"api_key": KEY, "base_url": base_url, "model": "test/model",
                "retry_backoff_s": 0.01, **config}
    pm = get_plugin_manager(PluginSettings(entry_points=False,
                                           config={"openrouter": settings}),
                            builtins=False, bundled=False)
    pm.register(wad_openrouter, "openrouter")
    if heuristic:
        pm.register(wad_heuristic_status, "heuristic_status")
    return pm


CONVERSATION = [
    message("Здравствуйте! Сколько стоит тур на Иссык-Куль?"),
    message("Добрый день! 450 долларов на человека, всё включено.", direction="OUT"),
    message("Дороговато. Можно скидку, если нас будет шестеро?"),
]


async def test_status_detection_sends_the_conversation_and_reads_the_answer(
        openrouter: tuple[FakeOpenRouter, str]) -> None:
    fake, url = openrouter
    fake.answer = lambda body: completion(json.dumps({
        "status": "NEGOTIATION", "confidence": 0.86,
        "reason": "The client asks for a discount for a group of six."}))
    pm = manager(url, app_title="Tour CRM")
    with trio.fail_after(10):
        decision = await detect_status(pm, client=client(status="WARMED"),
                                       messages=CONVERSATION, current_status="WARMED")
    assert decision == StatusDecision(
        status="NEGOTIATION", confidence=0.86,
        reason="The client asks for a discount for a group of six.", detector="openrouter")

    [sent] = fake.requests
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}"
    assert sent["headers"]["X-Title"] == "Tour CRM"
    assert sent["json"]["model"] == "test/model"
    # Structured output: OpenRouter's JSON-schema response format, strict, the stages as an enum.
    response_format = sent["json"]["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "funnel_status"
    assert response_format["json_schema"]["strict"] is True
    schema = response_format["json_schema"]["schema"]
    assert schema["properties"]["status"]["enum"] == list(FUNNEL)
    assert set(schema["required"]) == {"status", "confidence", "evidence", "reason"}
    assert schema["additionalProperties"] is False
    # A structured prompt: every stage with the evidence for it, then the numbered conversation
    # with both sides.
    system, user = sent["json"]["messages"]
    for stage in FUNNEL:
        assert f"{stage}: " in system["content"]
    assert "payment details" in system["content"]
    assert "Current status: WARMED" in user["content"]
    assert "[2] US: Добрый день! 450 долларов" in user["content"]
    for number, m in enumerate(CONVERSATION, 1):
        assert f"[{number}] " in user["content"]
        assert m.text in user["content"]


async def test_the_quoted_evidence_goes_into_the_reason(
        openrouter: tuple[FakeOpenRouter, str]) -> None:
    fake, url = openrouter
    fake.answer = lambda body: completion(json.dumps({
        "status": "NEGOTIATION", "confidence": 0.8, "reason": "The client asks for a discount.",
        "evidence": [{"who": "US", "quote": "450 долларов на человека"},
                     {"who": "CLIENT", "quote": "Можно скидку"}]}))
    with trio.fail_after(10):
        decision = await detect_status(manager(url), client=client(), messages=CONVERSATION,
                                       current_status="WARMED")
    assert decision is not None
    assert decision.reason == ("The client asks for a discount. (US «450 долларов на человека»; "
                               "CLIENT «Можно скидку»)")


async def test_the_model_decides_when_confident_and_the_heuristic_otherwise(
        openrouter: tuple[FakeOpenRouter, str]) -> None:
    fake, url = openrouter
    sold = [message("Ok, we go ahead with the 12th"),
            message("Deposit 300 USD to IBAN KG12 1090 0000 1234 5678 please", direction="OUT"),
            message("Sent it just now")]
    pm = manager(url, heuristic=True)
    fake.answer = lambda body: completion(json.dumps({
        "status": "SOLD", "confidence": 0.92, "reason": "The client paid the deposit.",
        "evidence": [{"who": "CLIENT", "quote": "Sent it just now"}]}))
    with trio.fail_after(10):
        confident = await detect_status(pm, client=client(), messages=sold,
                                        current_status="PROPOSAL_SENT")
    assert confident is not None
    assert (confident.detector, confident.status) == ("openrouter", "SOLD")
    fake.answer = lambda body: completion(json.dumps({
        "status": "WARMED", "confidence": 0.3, "reason": "Not sure.", "evidence": []}))
    with trio.fail_after(10):
        unsure = await detect_status(pm, client=client(), messages=sold,
                                     current_status="PROPOSAL_SENT")
    assert unsure is not None
    assert (unsure.detector, unsure.status) == ("heuristic_status", "SOLD")
    assert "«Sent it»" in unsure.reason
    assert len(fake.requests) == 2


async def test_key_comes_from_the_environment_and_code_fences_are_tolerated(
        openrouter: tuple[FakeOpenRouter, str], monkeypatch: pytest.MonkeyPatch) -> None:
    fake, url = openrouter
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-from-env")
    fake.answer = lambda body: completion(
        '```json\n{"status": "SOLD", "confidence": 0.9, "reason": "paid"}\n```')
    pm = manager(url, api_key="", status_model="test/cheap-model")
    with trio.fail_after(10):
        decision = await detect_status(pm, client=client(), messages=CONVERSATION,
                                       current_status="NEGOTIATION")
    assert decision is not None
    assert decision.status == "SOLD"
    assert fake.requests[0]["headers"]["Authorization"] == "Bearer sk-or-from-env"
    assert fake.requests[0]["json"]["model"] == "test/cheap-model"


async def test_without_a_key_nothing_is_sent(openrouter: tuple[FakeOpenRouter, str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fake, url = openrouter
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    pm = manager(url, api_key="", agent=True)
    assert await detect_status(pm, client=client(), messages=CONVERSATION,
                               current_status=None) is None
    assert await agent_reply(pm, message=CONVERSATION[-1], client=client(),
                             conversation=CONVERSATION) is None
    assert fake.requests == []


def server_error(body: dict[str, Any]) -> Response:
    return Response('{"error": {"message": "upstream overloaded"}}', status=500,
                    content_type="application/json")


@pytest.mark.parametrize(("case", "answer", "requests"), [
    ("500", server_error, 3),  # retried twice, then given up
    ("timeout", lambda body: 2.0, 1),
    ("garbage", lambda body: completion("Sure! The client looks interested in a discount."), 1),
    ("bad status", lambda body: completion('{"status": "HAPPY", "confidence": 0.9}'), 1),
    ("bad confidence", lambda body: completion('{"status": "SOLD", "confidence": 7}'), 1),
    ("not a completion", lambda body: Response('{"ok": true}', content_type="application/json"),
     1),
])
async def test_status_detection_falls_back_to_the_next_detector(
        openrouter: tuple[FakeOpenRouter, str], case: str, answer: Any, requests: int) -> None:
    fake, url = openrouter
    fake.answer = answer
    pm = manager(url, heuristic=True, timeout_s=0.3,
                 retries=2 if case == "500" else 0)
    with capture_logs() as logs, trio.fail_after(10):
        decision = await detect_status(pm, client=client(status="WARMED"),
                                       messages=CONVERSATION, current_status="WARMED")
    assert len(fake.requests) == requests
    assert decision is not None
    assert decision.detector == "heuristic_status"
    assert decision.status == "NEGOTIATION"
    assert "«Дороговато»" in decision.reason
    assert "скидку" in decision.reason
    warning = [line for line in logs if line["log_level"] == "warning"]
    assert len(warning) == 1
    assert "falling back" in warning[0]["event"]
    assert KEY not in json.dumps(logs, default=str)


async def test_agent_replies_in_json_and_sees_both_sides(
        openrouter: tuple[FakeOpenRouter, str]) -> None:
    fake, url = openrouter
    fake.answer = lambda body: completion(json.dumps(
        {"reply": "Для группы из шести человек скидка 10%: 405 долларов на человека."}))
    pm = manager(url, agent=True, agent_model="test/agent-model")
    with trio.fail_after(10):
        reply = await agent_reply(pm, message=CONVERSATION[-1],
                                  client=client(preferred_language="ru"),
                                  conversation=CONVERSATION)
    assert reply == AgentReply(
        text="Для группы из шести человек скидка 10%: 405 долларов на человека.",
        agent="openrouter")
    [sent] = fake.requests
    assert sent["json"]["model"] == "test/agent-model"
    roles = [(m["role"], m["content"]) for m in sent["json"]["messages"]]
    assert roles[0][0] == "system"
    assert "Client's language: ru" in roles[0][1]
    assert roles[1:] == [("user", CONVERSATION[0].text), ("assistant", CONVERSATION[1].text),
                         ("user", CONVERSATION[2].text)]


@pytest.mark.parametrize("answer", [
    server_error,
    lambda body: completion("I think you should offer a discount"),
    lambda body: completion('{"reply": null}'),
    lambda body: completion('{"reply": "   "}'),
])
async def test_agent_stays_silent_when_the_service_fails_or_declines(
        openrouter: tuple[FakeOpenRouter, str], answer: Any) -> None:
    fake, url = openrouter
    fake.answer = answer
    pm = manager(url, agent=True, retries=1)
    with capture_logs(), trio.fail_after(10):
        reply = await agent_reply(pm, message=CONVERSATION[-1], client=client(),
                                  conversation=CONVERSATION)
    assert reply is None
    assert fake.requests


async def test_agent_is_off_unless_enabled(openrouter: tuple[FakeOpenRouter, str]) -> None:
    fake, url = openrouter
    pm = manager(url)
    assert await agent_reply(pm, message=CONVERSATION[-1], client=client(),
                             conversation=CONVERSATION) is None
    assert fake.requests == []


@pytest.mark.parametrize(("key", "table", "core_key", "most"), [
    ("history", "inbound", "conversation_window", 500),
    ("retries", "outbound", "max_retries", 10),
    ("timeout_s", "inbound", "processing_timeout_s", 3600),
    ("retry_backoff_s", "inbound", "processing_delay_max_s", 3600),
])
def test_settings_of_one_kind_have_the_cores_bounds(key: str, table: str, core_key: str,
                                                     most: int) -> None:
    """The plugin's settings use wad.config's named kinds: the same largest value as the core's
    setting of that kind, and one more refused by both."""
    wad_config.parse(f"[{table}]\n{core_key} = {most}\n")
    msgspec.convert({key: most}, wad_openrouter.Config)
    with pytest.raises(ConfigError, match=f"{table}.{core_key}"):
        wad_config.parse(f"[{table}]\n{core_key} = {most + 1}\n")
    with pytest.raises(msgspec.ValidationError, match=key):
        msgspec.convert({key: most + 1}, wad_openrouter.Config)
