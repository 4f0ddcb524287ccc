"""A local HTTP server that speaks OpenRouter's chat-completions protocol (the one allowed mock)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio


class FakeOpenRouter:
    """Records each request; `answer` decides each response."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answer: Callable[[dict[str, Any]], Any] = lambda body: completion("{}")
        self.app = QuartTrio("fake-openrouter")
        self.app.add_url_rule("/api/v1/chat/completions", "completions", self._completions,
                              methods=["POST"])

    async def _completions(self) -> Any:
        body = await request.get_json()
        self.requests.append({"headers": dict(request.headers), "json": body})
        result = self.answer(body)
        if isinstance(result, float):  # a delay: answer too late
            await trio.sleep(result)
            return completion("{}")
        return result


def completion(content: str) -> Response:
    return Response(json.dumps({
        "id": "gen-1", "object": "chat.completion", "model": "test/model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
    }), content_type="application/json")
