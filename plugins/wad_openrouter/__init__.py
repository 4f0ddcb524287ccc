"""OpenRouter status detector and agent: a language model decides where a client stands in the
funnel and, when enabled, writes the reply.

Both speak OpenRouter's chat-completions protocol (`POST {base_url}/chat/completions` with a
bearer key), ask for a JSON answer and validate it with msgspec. The status detector asks for
structured output: a JSON schema (`response_format` of type `json_schema`, strict) with the
stage, a confidence, the quoted evidence from either side and a one-sentence reason; its prompt
lays out the stages, the evidence each side gives for them and how a funnel moves. wad asks this
detector first and the heuristic one after it, so the model decides when it is configured and
confident (`plugins.status_min_confidence`), and the heuristic otherwise. Whenever the service cannot give
a usable answer (no key, network error, timeout, an error status after the retries, an answer
that is not the JSON asked for, a status that is not a funnel stage) the hook answers None, so
the next detector (the heuristic one) decides, or no reply is sent.

Configuration (`[plugins.config.openrouter]`, see `Config`); the key may instead come from
`OPENROUTER_API_KEY`. The agent is off by default: it writes to real clients.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Annotated, Any

import httpx
import msgspec
import trio
from msgspec import Meta

from wad import environment, hookimpl, log
from wad.config import ConversationWindow, RetryCount, Seconds, Timeout
from wad.payloads import (
    FUNNEL,
    AgentReply,
    Client,
    ClientStatus,
    Confidence,
    Message,
    StatusDecision,
)
from wad.plugins import PluginContext
from wad.supervise import Backoff

NAME = "openrouter"
DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"

_log = log.get("plugin.openrouter")

_STAGES = {
    "NEW_LEAD": ("first contact: a greeting, a referral, an ad seen, a general question",
                 "nothing specific yet"),
    "QUALIFIED": ("the client has said what they need: dates, how many people, where, budget",
                  "client: party size, dates, destination, wishes"),
    "WARMED": ("the client is interested in a trip and asks about it",
               "client: questions about price, inclusions, fitness, comfort, the program"),
    "PROPOSAL_SENT": ("we have sent a concrete offer",
                      "us: a price with its currency, an itinerary or day-by-day plan, a PDF"),
    "NEGOTIATION": ("the offer is being discussed",
                    "client: too expensive, over budget, asks for a discount or changes, compares"
                    " with others; us: a lower price or a cheaper variant"),
    "SOLD": ("the client has agreed and booked or paid",
             "client: 'we take it', 'paid', 'sent' after we gave payment details; us: payment"
             " received, booking confirmed, voucher"),
    "SERVICE": ("the trip is being delivered or has just ended",
                "us: driver and pickup times, welcome, 'how was your trip'; client: arrived,"
                " waiting, a problem on the way, a complaint"),
    "CLOSED": ("the deal is over without a trip to deliver",
               "client: declines, cancels, goes elsewhere, 'not this year'; us: a goodbye such"
               " as 'hope to see you next season'"),
}

STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": list(FUNNEL),
                   "description": "The stage the conversation stands at now."},
        "confidence": {"type": "number",
                       "description": "How sure, from 0 (a guess) to 1 (certain)."},
        "evidence": {
            "type": "array",
            "description": "The messages that decided it, quoted word for word.",
            "items": {
                "type": "object",
                "properties": {"who": {"type": "string", "enum": ["CLIENT", "US"]},
                               "quote": {"type": "string"}},
                "required": ["who", "quote"],
                "additionalProperties": False,
            },
        },
        "reason": {"type": "string", "description": "One short sentence: why this stage."},
    },
    "required": ["status", "confidence", "evidence", "reason"],
    "additionalProperties": False,
}
"""The JSON schema the status detector's answer must follow (OpenRouter's structured output)."""

STATUS_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "funnel_status", "strict": True, "schema": STATUS_SCHEMA},
}

DEFAULT_AGENT_INSTRUCTIONS = (
    "You are the friendly sales assistant of a tour company in Kyrgyzstan, answering clients on "
    "WhatsApp. Answer briefly (one to three sentences), in the client's language, politely and "
    "concretely. Never invent prices, dates or availability that the conversation does not "
    "state; offer to check with a manager instead. If the message needs no answer (a thank-you, "
    "an emoji) or a human must handle it (a complaint, a payment problem), do not reply."
)


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[plugins.config.openrouter]`."""

    api_key: str = ""
    """The OpenRouter key. Empty: wad's `OPENROUTER_API_KEY`."""
    base_url: str = DEFAULT_BASE_URL
    model: str = "openai/gpt-4o-mini"
    status_model: str = ""
    """Model for status detection; empty: `model`."""
    agent_model: str = ""
    """Model for agent replies; empty: `model`."""
    detect_status: bool = True
    agent: bool = False
    """Answer clients. Off by default: replies go to real people."""
    agent_instructions: str = DEFAULT_AGENT_INSTRUCTIONS
    timeout_s: Timeout = 20.0
    """Per request (connect, write, read)."""
    retries: RetryCount = 2
    """Further attempts after a network error, a timeout, 429 or a 5xx answer."""
    retry_backoff_s: Seconds = 1.0
    """Pause before the first retry; doubled before each next one."""
    history: ConversationWindow = 20
    """How many of the latest messages the model reads (of the `inbound.conversation_window` it
    is handed)."""
    temperature: Annotated[float, Meta(ge=0, le=2)] = 0.2
    max_tokens: Annotated[int, Meta(ge=16, le=8192)] = 400
    app_url: str = ""
    """Sent as `HTTP-Referer` (OpenRouter's app attribution), when set."""
    app_title: str = "wad"
    """Sent as `X-Title`, when set."""


# What OpenRouter answers (only the parts used) and what the model is asked to answer.


class _ChatMessage(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _ChatMessage


class _Completion(msgspec.Struct):
    choices: list[_Choice]


class Evidence(msgspec.Struct, forbid_unknown_fields=False):
    who: str
    quote: str


class StatusAnswer(msgspec.Struct, forbid_unknown_fields=False):
    status: ClientStatus
    confidence: Confidence
    reason: str = ""
    evidence: list[Evidence] = []

    def explanation(self) -> str:
        """The reason, then the quoted evidence, for the status history (500 characters)."""
        quotes = "; ".join(f"{e.who} «{e.quote.strip()}»" for e in self.evidence[:4]
                           if e.quote.strip())
        text = self.reason.strip()
        if quotes:
            text = f"{text} ({quotes})" if text else quotes
        return text[:500]


class AgentAnswer(msgspec.Struct, forbid_unknown_fields=False):
    reply: str | None = None


class OpenRouterError(Exception):
    """The service gave no usable answer; the message says why (never the key)."""


def _config(ctx: PluginContext) -> Config:
    config = ctx.plugin_config(NAME)
    return config if isinstance(config, Config) else msgspec.convert(config or {}, Config)


def api_key(ctx: PluginContext, config: Config) -> str:
    """The key: from the plugin's configuration, else wad's settings, else the environment."""
    if config.api_key:
        return config.api_key
    settings_key = getattr(ctx.settings, "openrouter_api_key", "") if ctx.settings else ""
    return settings_key or environment.secret("OPENROUTER_API_KEY")


def _json_text(content: str) -> str:
    """The JSON object in a model's answer, without the code fences some models add."""
    text = content.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, flags=re.DOTALL)
    return fenced.group(1) if fenced else text


async def complete(config: Config, key: str, *, model: str, messages: list[dict[str, str]],
                   response_format: dict[str, Any] | None = None) -> str:
    """The text of the model's answer to a chat, in `response_format` (default: any JSON object);
    `OpenRouterError` when there is none after the retries."""
    headers = {"Authorization": f"Bearer {key}"}
    if config.app_url:
        headers["HTTP-Referer"] = config.app_url
    if config.app_title:
        headers["X-Title"] = config.app_title
    body = {
        "model": model,
        "messages": messages,
        "temperature": config.temperature,
        "max_tokens": config.max_tokens,
        "response_format": response_format or {"type": "json_object"},
    }
    url = config.base_url.rstrip("/") + "/chat/completions"
    problem = "no attempt made"
    async with httpx.AsyncClient(timeout=httpx.Timeout(config.timeout_s)) as http:
        for attempt in range(config.retries + 1):
            if attempt:
                await trio.sleep(Backoff(initial=config.retry_backoff_s, max=math.inf)
                                 .delay(attempt))
            try:
                response = await http.post(url, json=body, headers=headers)
            except httpx.TimeoutException:
                problem = f"no answer within {config.timeout_s} s"
                continue
            except httpx.TransportError as exc:
                problem = f"cannot reach {url}: {type(exc).__name__}"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                problem = f"{url} answered {response.status_code}"
                continue
            if response.status_code != 200:
                raise OpenRouterError(f"{url} answered {response.status_code}")
            try:
                completion = msgspec.json.decode(response.content, type=_Completion)
            except msgspec.DecodeError as exc:
                raise OpenRouterError(f"not a chat completion: {exc}") from None
            if not completion.choices or not completion.choices[0].message.content:
                raise OpenRouterError("the completion has no content")
            return completion.choices[0].message.content
    raise OpenRouterError(f"{problem} (after {config.retries + 1} attempts)")


def _line(message: Message) -> str:
    who = "CLIENT" if message.direction == "IN" else ("US (agent)" if message.sender == "AI"
                                                       else "US")
    text = message.text.replace("\n", " ")
    if message.type != "text":
        text = f"[{message.type}] {text}".strip()
    return f"{who}: {text}"


def status_prompt(client: Client, messages: Sequence[Message], current: ClientStatus | None
                  ) -> list[dict[str, str]]:
    """The chat that asks the model for a funnel stage: the stages with the evidence for each,
    the rules of movement, then the facts and the numbered conversation."""
    stages = "\n".join(f"{number}. {stage}: {meaning}. Evidence: {evidence}."
                       for number, (stage, (meaning, evidence))
                       in enumerate(_STAGES.items(), 1))
    system = (
        "You are the CRM of a tour company in Kyrgyzstan. From a WhatsApp conversation between "
        "the company (US) and a client (CLIENT), in any language, decide where the client "
        "stands in the sales funnel now.\n\n"
        "Stages, in funnel order:\n" + stages + "\n\n"
        "Rules:\n"
        "- Read the whole conversation, both sides: our own messages (a price, an itinerary, "
        "payment details, a confirmation, the driver's time) are evidence as much as the "
        "client's.\n"
        "- The latest evidence decides: a funnel moves forward, and back only when the deal is "
        "lost or cancelled (CLOSED) or a closed client comes back with a new request.\n"
        "- What people say they did or will do counts even without keywords: 'done' after we "
        "sent payment details means paid; 'we'll go to Georgia instead' means CLOSED.\n"
        "- Confidence below 0.5 means you are guessing; then the company's own rules decide.\n"
        "- Quote the decisive messages word for word in `evidence`; `reason` is one sentence "
        "in English."
    )
    facts = [f"Current status: {current or 'unknown'}"]
    if client.preferred_language:
        facts.append(f"Client's language: {client.preferred_language}")
    shown = [m for m in messages if m.text or m.type != "text"]
    transcript = "\n".join(f"[{number}] {_line(m)}" for number, m in enumerate(shown, 1))
    user = "\n".join(facts) + "\nConversation, oldest first:\n" + transcript
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def agent_prompt(instructions: str, client: Client, conversation: Sequence[Message]
                 ) -> list[dict[str, str]]:
    """The chat that asks the model for a reply to the client's latest message."""
    system = instructions + (
        "\nAnswer with one JSON object and nothing else: "
        '{"reply": "<the message to send>"} or {"reply": null} to stay silent.'
    )
    facts = [f"Client status in the funnel: {client.status}"]
    if client.name:
        facts.append(f"Client's name: {client.name}")
    if client.preferred_language:
        facts.append(f"Client's language: {client.preferred_language}")
    chat = [{"role": "system", "content": system + "\n" + "\n".join(facts)}]
    for message in conversation:
        text = message.text if message.type == "text" else f"[{message.type}] {message.text}"
        if text.strip():
            chat.append({"role": "user" if message.direction == "IN" else "assistant",
                         "content": text})
    return chat


async def detect_status(ctx: PluginContext, client: Client, messages: Sequence[Message],
                        current_status: ClientStatus | None) -> StatusDecision | None:
    """The model's decision, or None when there is no usable one."""
    config = _config(ctx)
    key = api_key(ctx, config)
    if not config.detect_status or not key or not messages:
        return None
    model = config.status_model or config.model
    chat = status_prompt(client, messages[-config.history:], current_status)
    try:
        content = await complete(config, key, model=model, messages=chat,
                                 response_format=STATUS_FORMAT)
        answer = msgspec.json.decode(_json_text(content), type=StatusAnswer)
    except OpenRouterError as exc:
        _log.warning("status detection unavailable; falling back", reason=str(exc))
        return None
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        _log.warning("status detection answered garbage; falling back", reason=str(exc))
        return None
    return StatusDecision(status=answer.status, confidence=answer.confidence,
                          reason=answer.explanation(), detector=NAME)


async def reply(ctx: PluginContext, message: Message, client: Client,
                conversation: Sequence[Message]) -> AgentReply | None:
    """The model's reply, or None to stay silent or when there is no usable answer."""
    config = _config(ctx)
    key = api_key(ctx, config)
    if not config.agent or not key:
        return None
    model = config.agent_model or config.model
    chat = agent_prompt(config.agent_instructions, client, conversation[-config.history:])
    try:
        content = await complete(config, key, model=model, messages=chat)
        answer = msgspec.json.decode(_json_text(content), type=AgentAnswer)
    except OpenRouterError as exc:
        _log.warning("agent unavailable; no reply", reason=str(exc))
        return None
    except msgspec.DecodeError as exc:
        _log.warning("agent answered garbage; no reply", reason=str(exc))
        return None
    text = (answer.reply or "").strip()
    if not text:
        return None
    return AgentReply(text=text[:4096], agent=NAME)


@hookimpl
def wad_plugin_config_type() -> type[Any]:
    return Config


@hookimpl
async def wad_detect_status(ctx: PluginContext, client: Client, messages: Sequence[Message],
                            current_status: ClientStatus | None) -> StatusDecision | None:
    return await detect_status(ctx, client, messages, current_status)


@hookimpl
async def wad_agent_reply(ctx: PluginContext, message: Message, client: Client,
                          conversation: Sequence[Message]) -> AgentReply | None:
    return await reply(ctx, message, client, conversation)
