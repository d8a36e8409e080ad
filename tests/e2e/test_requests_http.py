"""The request bodies and headers that reach a real OpenAI-compatible server."""

from __future__ import annotations

from typing import Any

import pytest

from chatstep import ChatCompletion, run_step
from chatstep.testing import Respond, TestServer


def _last_body(server: TestServer) -> dict[str, Any]:
    body = server.requests[-1].body
    assert isinstance(body, dict)
    return body


def test_prompt_only(openai_env: TestServer) -> None:
    result = run_step(ChatCompletion(model="gpt-4o-mini", prompt="Say hi"))
    assert _last_body(openai_env) == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hi"}],
    }
    assert result.content == "echo: Say hi"


def test_system_history_prompt_order(openai_env: TestServer) -> None:
    run_step(
        {
            "model": "gpt-4o-mini",
            "system_message": "You are terse.",
            "chat_history": [
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "reply"},
            ],
            "prompt": "{{ inputs.q }}",
        },
        {"q": "second"},
    )
    assert _last_body(openai_env)["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": "second"},
    ]


def test_kestra_functions_reach_the_server_as_tools(openai_env: TestServer) -> None:
    run_step(
        {
            "model": "gpt-4o",
            "prompt": "triage",
            "functions": [
                {
                    "name": "respond_to_review",
                    "description": "Decide.",
                    "parameters": [
                        {
                            "name": "response_urgency",
                            "type": "string",
                            "required": True,
                            "enumValues": ["reply_immediately", "reply_later"],
                        },
                        {"name": "response_text", "type": "string", "required": True},
                    ],
                }
            ],
            "functionCall": "respond_to_review",
        }
    )
    body = _last_body(openai_env)
    params = body["tools"][0]["function"]["parameters"]
    assert params["properties"]["response_urgency"]["enum"] == ["reply_immediately", "reply_later"]
    assert params["required"] == ["response_urgency", "response_text"]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "respond_to_review"}}
    assert "functions" not in body


def test_camel_case_aliases_on_the_wire(openai_env: TestServer) -> None:
    run_step(
        {
            "model": "gpt-4o-mini",
            "prompt": "x",
            "maxTokens": 50,
            "topP": 0.9,
            "presencePenalty": 0.5,
            "frequencyPenalty": -0.5,
            "logitBias": {"50256": -100},
        }
    )
    body = _last_body(openai_env)
    assert body["max_tokens"] == 50
    assert body["top_p"] == 0.9
    assert body["presence_penalty"] == 0.5
    assert body["frequency_penalty"] == -0.5
    assert body["logit_bias"] == {"50256": -100}


def test_n_choices(openai_env: TestServer) -> None:
    result = run_step({"model": "gpt-4o-mini", "prompt": "two please", "n": 2})
    assert _last_body(openai_env)["n"] == 2
    assert len(result.contents) == 2


def test_json_schema_output_is_parsed_and_validated(openai_env: TestServer) -> None:
    schema = {
        "type": "object",
        "properties": {
            "response_urgency": {"type": "string", "enum": ["reply_immediately", "reply_later"]},
            "response_text": {"type": "string"},
        },
        "required": ["response_urgency", "response_text"],
        "additionalProperties": False,
    }
    result = run_step(
        {
            "model": "gpt-4o-mini",
            "prompt": "triage",
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "triage", "schema": schema, "strict": True},
            },
        }
    )
    assert _last_body(openai_env)["response_format"]["json_schema"]["schema"] == schema
    assert result.parsed["response_urgency"] in ("reply_immediately", "reply_later")


def test_extra_body_is_sent_as_is(openai_env: TestServer) -> None:
    openai_env.allow_spec_violations()  # vendor fields are not in OpenAI's spec
    run_step({"model": "local-llama", "prompt": "x", "extra_body": {"top_k": 20, "min_p": 0.1}})
    body = _last_body(openai_env)
    assert body["top_k"] == 20
    assert body["min_p"] == 0.1


def test_organization_project_and_key_headers(openai_server: TestServer) -> None:
    run_step(
        {
            "model": "gpt-4o-mini",
            "prompt": "x",
            "base_url": openai_server.base_url,
            "api_key": "sk-test-header-key-000000000000",
            "organization": "org-123",
            "project": "proj_456",
            "extra_headers": {"x-team": "data"},
        }
    )
    headers = openai_server.requests[-1].headers
    assert headers["openai-organization"] == "org-123"
    assert headers["openai-project"] == "proj_456"
    # The test server records keys masked to their last four characters.
    assert headers["authorization"] == "Bearer ...0000"
    assert headers["x-team"] == "data"


def test_connection_from_environment(
    openai_server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-env-key-0000000000")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-env")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-env")
    run_step({"model": "gpt-4o-mini", "prompt": "x"})
    headers = openai_server.requests[-1].headers
    assert headers["openai-organization"] == "org-env"
    assert headers["openai-project"] == "proj-env"


def test_secret_from_dotenv_file(openai_server: TestServer, tmp_path: Any) -> None:
    (tmp_path / ".env").write_text(
        f"OPENAI_BASE_URL={openai_server.base_url}\nMY_KEY=sk-test-dotenv-key-00000000\n"
    )
    (tmp_path / ".env").write_text(
        f"OPENAI_BASE_URL={openai_server.base_url}\nMY_KEY=sk-test-dotenv-key-0000wxyz\n"
    )
    run_step({"model": "gpt-4o-mini", "prompt": "x", "apiKey": "{{ secret('MY_KEY') }}"})
    assert openai_server.requests[-1].headers["authorization"] == "Bearer ...wxyz"


def test_templated_numeric_field_is_validated_after_rendering(openai_env: TestServer) -> None:
    from chatstep import ConfigError

    run_step(
        {"model": "gpt-4o-mini", "prompt": "x", "temperature": "{{ inputs.t }}"}, {"t": "0.25"}
    )
    assert _last_body(openai_env)["temperature"] == 0.25
    with pytest.raises(ConfigError) as info:
        run_step({"model": "gpt-4o-mini", "prompt": "x", "temperature": "{{ inputs.t }}"}, {"t": 7})
    assert info.value.field == "temperature"
    assert "after rendering" in str(info.value)


def test_scripted_answer_round_trip(openai_env: TestServer) -> None:
    openai_env.enqueue(Respond(content="scripted"))
    assert run_step({"model": "gpt-4o-mini", "prompt": "x"}).content == "scripted"
