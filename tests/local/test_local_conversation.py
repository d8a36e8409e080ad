"""A conversation offline, on the embedded model: no key, no base URL."""

from __future__ import annotations

from typing import Any

from chatstep import Conversation
from chatstep.storage.history import History


def test_a_conversation_on_the_embedded_model(local_model: Any) -> None:
    step = {"model": "gpt-4o-mini", "prompt": "{{ inputs.text }}", "max_tokens": 8}
    with Conversation(step=step, system="Answer in a few words.") as chat:
        first = chat.send("Name a color.")
        second = chat.send("Name another one.")
        cid = chat.id
    assert first.cost == 0.0
    assert isinstance(second.content, str)
    assert second.content.strip()
    with Conversation.load(cid) as again:
        roles = [m["role"] for m in again.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    # The second request carried the first turn (the call log holds what was sent).
    with History() as history:
        last = history.recent(limit=1)[0]
    assert [m["role"] for m in last.request["messages"]] == roles[:4]
    assert last.base_url == "local"
