"""The step model and the request builder against the SDK's ``CompletionCreateParams``.

chatstep keeps its own copy of the Chat Completions parameters (typed step fields, and the list
``core/request.py`` sends), so a new SDK release can add or widen parameters the copy lacks. This
test diffs the copy against the installed SDK; every difference must be listed below, with why.
"""

from __future__ import annotations

import typing
from typing import Any

import pytest
from openai.types.chat import completion_create_params as sdk

from chatstep.core import request as builder
from chatstep.steps.definitions import ChatCompletion, StepBase

SDK_PARAMS: dict[str, Any] = {
    **typing.get_type_hints(sdk.CompletionCreateParamsNonStreaming),
    **typing.get_type_hints(sdk.CompletionCreateParamsStreaming),
}

# Step fields that are not request parameters, on purpose.
STEP_ONLY = {
    # composed into `messages` (core/request.compose_messages)
    "system_message",
    "chat_history",
    "prompt",
    # the SDK's per-request option `extra_body`, merged into the body
    "extra_body",
    # checked before sending (accounting/context.check_context_window), never sent
    "context_window",
    # other endpoints tried when this one is down (core/fallbacks), never sent
    "fallbacks",
    # moderation calls around the request (core/guard), never sent
    "guard",
    # an index searched before rendering (retrieval/retrieve), never sent
    "retrieve",
}

# SDK parameters a step cannot set as a typed field, on purpose or not yet. Each can still be
# sent through `extra_body`.
NOT_TYPED = {
    # openai 3.x additions, not typed yet: send through extra_body
    "moderation",
    "prompt_cache_options",
    "prompt_cache_retention",
}

# Sent by the builder although not in its plain list: built from typed objects or from other
# fields (functions/function_call become tools/tool_choice; stream is the call's choice).
BUILT = {"model", "messages", "response_format", "tools", "tool_choice", "stream", "stream_options"}


def _chat_fields() -> set[str]:
    # StepBase holds connection and run settings (api_key, timeout, cache...), except `model`.
    return set(ChatCompletion.model_fields) - (set(StepBase.model_fields) - {"model"})


def _literals(hint: Any) -> set[Any]:
    """Every Literal value anywhere inside a type hint."""
    if typing.get_origin(hint) is typing.Literal:
        return set(typing.get_args(hint))
    found: set[Any] = set()
    for arg in typing.get_args(hint):
        found |= _literals(arg)
    return found


def test_every_step_chat_field_is_an_sdk_parameter() -> None:
    extra = _chat_fields() - STEP_ONLY - set(SDK_PARAMS)
    assert not extra, f"step fields the SDK does not know: {sorted(extra)}"


def test_every_sdk_parameter_is_a_step_field() -> None:
    missing = set(SDK_PARAMS) - _chat_fields() - NOT_TYPED
    assert not missing, f"SDK parameters a step cannot set: {sorted(missing)} (add or allow-list)"


def test_allow_lists_are_not_stale() -> None:
    assert not (NOT_TYPED & _chat_fields()), "typed now: drop from NOT_TYPED"
    assert set(SDK_PARAMS) >= NOT_TYPED, "gone from the SDK: drop from NOT_TYPED"
    assert not (STEP_ONLY & set(SDK_PARAMS)), "now an SDK parameter: drop from STEP_ONLY"


def test_the_builder_sends_only_sdk_parameters_it_has_fields_for() -> None:
    plain = set(builder._CHAT_PARAMS)
    assert len(plain) == len(builder._CHAT_PARAMS), "a parameter is listed twice"
    assert plain <= _chat_fields()
    assert (plain | BUILT) <= set(SDK_PARAMS)
    # Every typed request parameter reaches the body, by the list or by its own code.
    sent = plain | BUILT | {"functions", "function_call"}  # these two become tools/tool_choice
    assert (_chat_fields() - STEP_ONLY) <= sent


# Fields whose values chatstep does not enumerate although the SDK does, on purpose.
OPEN_VALUES = {
    "model": "any model id: OpenAI-compatible servers serve models the SDK does not list",
    "function_call": "a string (a function's name, or auto/none), checked against functions",
    "stream": "a bool: the SDK's streaming / non-streaming param types are one step field",
}


@pytest.mark.parametrize("name", sorted(_chat_fields() & set(SDK_PARAMS)))
def test_enumerated_values_match(name: str) -> None:
    # Where chatstep enumerates values (Literal), they are the SDK's, no more and no fewer.
    ours = _literals(ChatCompletion.model_fields[name].annotation)
    theirs = _literals(SDK_PARAMS[name])
    if name in OPEN_VALUES:
        assert not ours, f"{name} is enumerated now: drop it from OPEN_VALUES"
        return
    assert ours == theirs, f"{name}: chatstep {sorted(ours)} vs SDK {sorted(theirs)}"
