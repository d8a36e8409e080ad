"""flytekit's ChatGPT example, with one line changed: the import.

Run it with ``python examples/flyte/chatgpt_workflow.py``; it needs ``chatstep[flyte]`` and a key
in ``FLYTE_OPENAI_API_KEY`` or ``OPENAI_API_KEY`` (with no key, the embedded local model answers).
"""

from flytekit import task, workflow  # noqa: F401  (as in flytekit's README)

from chatstep.integrations.flyte import ChatGPTConfig, ChatGPTTask  # noqa: F401

chatgpt_small_job = ChatGPTTask(
    name="chatgpt gpt-3.5-turbo",
    openai_organization="org-NayNG68kGnVXMJ8Ak4PMgQv7",
    chatgpt_config={
        "model": "gpt-3.5-turbo",
        "temperature": 0.7,
    },
)

chatgpt_big_job = ChatGPTTask(
    name="chatgpt gpt-4",
    openai_organization="org-NayNG68kGnVXMJ8Ak4PMgQv7",
    chatgpt_config={
        "model": "gpt-4",
        "temperature": 0.7,
    },
)


@workflow
def wf(message: str) -> str:
    message = chatgpt_small_job(message=message)
    message = chatgpt_big_job(message=message)
    return message  # noqa: RET504  (kept exactly as flytekit's README writes it)


if __name__ == "__main__":
    print(wf(message="hi"))
