"""Conversations: a named, persisted message list that each ``send`` continues.

::

    with chatstep.Conversation("gpt-4o-mini", system="Answer briefly.") as chat:
        print(chat.send("Name a prime.").content)
        print(chat.send("And the next one?").content)   # sees the first turn
    later = chatstep.Conversation.load(chat.id)          # in any process

A conversation is made from a model (and a system message), or from a chat step: the step gives
the model, the parameters, the connection and its own messages (system message, examples); its
``prompt``, if any, is a template of each turn over ``{{ inputs.text }}`` (the text sent), else
the text is the user message as it is. Texts are never rendered as templates.

Each turn sends every message kept so far plus the new one, through the runner's pipeline (cache,
limits, retries, fallbacks, guard, history), and stores the user message and the answer in one
transaction, only once the answer arrived. What happens when the conversation outgrows the
context window is declared by a strategy (:mod:`chatstep.core.context_strategies`); without
one, an over-long conversation is a :class:`~chatstep.errors.ConfigError`, never truncated.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from chatstep.core.context_strategies import (
    SUMMARIZE_SYSTEM_PROMPT,
    SUMMARY_PREFIX,
    ContextStrategy,
    SlidingWindow,
    Summarize,
    fit_problem,
    parse_strategy,
    split_turns,
    strategy_settings,
    transcript_text,
)
from chatstep.core.request import Request
from chatstep.core.result import StepResult
from chatstep.core.runner import AsyncRunner, DeltaCallback, StepSource, as_step
from chatstep.errors import ConfigError, OutputError
from chatstep.steps.definitions import ChatCompletion
from chatstep.steps.fields import looks_like_template
from chatstep.steps.messages import Message
from chatstep.storage.conversations import ConversationRecord, ConversationStore, StoredMessage
from chatstep.storage.history import new_id

__all__ = ["TURN_TEXT", "AsyncConversation", "StrategySpec"]

StrategySpec = ContextStrategy | str | Mapping[str, Any] | None
"""A strategy object, its name (``sliding_window``, ``summarize``), or its stored settings."""

#: The template of a turn when the step has no ``prompt``: the text as it is.
TURN_TEXT = "{{ inputs.text }}"

_PINNED_KINDS = frozenset({"preamble", "summary"})
#: Fields of a step that carry credentials: stored only when they are templates.
_KEY_FIELDS = ("api_key",)


def _portable(step: ChatCompletion) -> dict[str, Any]:
    """The step's fields to store with the conversation, without literal API keys."""
    data = step.model_dump(mode="json", exclude_none=True)
    for holder in [data, data.get("guard") or {}, *(data.get("fallbacks") or [])]:
        for key in _KEY_FIELDS:
            value = holder.get(key)
            if isinstance(value, str) and not looks_like_template(value):
                holder.pop(key)
    return data


def _answer_message(result: StepResult) -> dict[str, Any]:
    """The first choice's message as the API takes it back in a later request."""
    choices = result.response.get("choices") or [{}]
    message = choices[0].get("message") or {}
    out: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    for key in ("tool_calls", "refusal", "function_call"):
        if message.get(key):
            out[key] = message[key]
    return out


def _refuse_unanswered_tool_calls(messages: list[dict[str, Any]]) -> None:
    """ConfigError when the last answer called tools whose results were not added: the API
    refuses any later request with a 400, so the conversation would fail on every turn."""
    pending: list[str] = []
    for message in messages:
        if message.get("role") == "assistant":
            pending = [str(c.get("id")) for c in message.get("tool_calls") or []]
        elif message.get("role") == "tool":
            pending = [i for i in pending if i != str(message.get("tool_call_id"))]
        else:
            pending = []  # only the last answer's calls can still be answered
    if pending:
        raise ConfigError(
            "conversation",
            f"the last answer called tools ({', '.join(pending)}) and their results were not "
            "added; the API refuses a new user turn before every tool call has its result",
            "add each result with add_message({'role': 'tool', 'tool_call_id': ID, "
            "'content': ...}) and send(None), or start a new conversation",
        )


def _local_window() -> int:
    from chatstep.backends.local.model import DEFAULT_N_CTX, N_CTX_ENV

    raw = os.environ.get(N_CTX_ENV, "").strip()
    return int(raw) if raw.isdigit() else DEFAULT_N_CTX


class AsyncConversation:
    """A persisted conversation, sent through an :class:`~chatstep.AsyncRunner`.

    Create one from ``model`` (+ ``system``) or from a chat ``step`` (object, path or mapping;
    ``inputs`` fill its templates), or open a stored one with :meth:`load` / :meth:`latest`.
    ``strategy``: ``"sliding_window"``, ``"summarize"``, a :class:`SlidingWindow` /
    :class:`Summarize`, or None (an over-long conversation is a ConfigError). ``context_window``
    (tokens) overrides the model's known window. ``store``: where conversations live (default:
    the history database under ``CHATSTEP_HOME``; in memory when ``CHATSTEP_HISTORY=off``).
    Without a ``runner`` the conversation opens its own; close it with :meth:`aclose`.

    Raises ConfigError for a step that is not a chat step, an unknown strategy or id.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        system: str | None = None,
        step: StepSource | None = None,
        inputs: Mapping[str, Any] | None = None,
        name: str | None = None,
        strategy: StrategySpec = None,
        context_window: int | None = None,
        runner: AsyncRunner | None = None,
        store: ConversationStore | None = None,
        _record: ConversationRecord | None = None,
    ) -> None:
        self._own_runner = runner is None
        self._own_store = store is None
        self.runner = runner if runner is not None else AsyncRunner()
        self.store = store if store is not None else ConversationStore.default()
        if _record is not None:
            self._open(_record, model, strategy, context_window)
            return
        base = self._base_step(model, system, step, context_window)
        self.strategy = parse_strategy(strategy)
        self.inputs = dict(inputs or {})
        self.id = new_id()
        self.name = name
        self.step = base
        # The step's own messages (system, examples) are rendered once, with an empty turn.
        _, request, _ = self.runner.prepare(base, {**self.inputs, "text": ""})
        preamble = list(request.body["messages"][:-1])
        if system is not None:
            preamble.insert(0, {"role": "system", "content": system})
        self.store.create(self._record(), [])
        if preamble:
            self.store.append(self.id, preamble, kind="preamble")

    @staticmethod
    def _base_step(
        model: str | None,
        system: str | None,
        step: StepSource | None,
        context_window: int | None,
    ) -> ChatCompletion:
        if step is None:
            if model is None:
                raise ConfigError("model", "a conversation needs a model or a step", "pass one")
            base = ChatCompletion(model=model, prompt=TURN_TEXT)
        else:
            loaded = as_step(step)
            if not isinstance(loaded, ChatCompletion):
                raise ConfigError(
                    "step", f"is a {loaded.kind} step; a conversation needs a chat step"
                )
            if loaded.n not in (None, 1):
                raise ConfigError("step.n", "a conversation continues one answer", "drop n")
            if loaded.retrieve is not None:
                raise ConfigError(
                    "step.retrieve",
                    "a conversation renders its step's messages once, so retrieved chunks "
                    "could not follow each turn's question",
                    "run the step with chatstep run, map or serve --steps, or send the chunks "
                    "you retrieve yourself as text",
                )
            base = loaded
            if base.prompt is None:
                base = base.model_copy(update={"prompt": TURN_TEXT})
            if model is not None:
                base = base.model_copy(update={"model": model})
        if context_window is not None:
            base = base.model_copy(update={"context_window": context_window})
        return base

    def _record(self) -> ConversationRecord:
        settings = {
            "step": _portable(self.step),
            "inputs": self.inputs,
            "strategy": strategy_settings(self.strategy),
        }
        return ConversationRecord(
            id=self.id, model=self.step.model, name=self.name, settings=settings
        )

    def _open(
        self,
        record: ConversationRecord,
        model: str | None,
        strategy: StrategySpec,
        context_window: int | None,
    ) -> None:
        self.id = record.id
        self.name = record.name
        self.inputs = dict(record.settings.get("inputs") or {})
        step = ChatCompletion.model_validate(record.settings["step"])
        self.step = self._base_step(model, None, step, context_window)
        stored = record.settings.get("strategy")
        self.strategy = parse_strategy(strategy if strategy is not None else stored)
        if model is not None or strategy is not None or context_window is not None:
            self.store.update(self._record())  # the changes hold from now on

    @classmethod
    def load(
        cls,
        conversation_id: str,
        *,
        model: str | None = None,
        strategy: StrategySpec = None,
        context_window: int | None = None,
        runner: AsyncRunner | None = None,
        store: ConversationStore | None = None,
    ) -> AsyncConversation:
        """Open a stored conversation by id (or a unique id prefix); ``model`` / ``strategy``
        change it from now on. ConfigError when no conversation has that id."""
        own = store is None
        store = store if store is not None else ConversationStore.default()
        record = store.get(conversation_id)
        conversation = cls(
            model,
            strategy=strategy,
            context_window=context_window,
            runner=runner,
            store=store,
            _record=record,
        )
        conversation._own_store = own
        return conversation

    @classmethod
    def latest(
        cls,
        *,
        model: str | None = None,
        strategy: StrategySpec = None,
        runner: AsyncRunner | None = None,
        store: ConversationStore | None = None,
    ) -> AsyncConversation | None:
        """The conversation used last, or None when there is none."""
        own = store is None
        store = store if store is not None else ConversationStore.default()
        record = store.latest()
        if record is None:
            return None
        conversation = cls(model, strategy=strategy, runner=runner, store=store, _record=record)
        conversation._own_store = own
        return conversation

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The messages the next request starts from (a summary stands for what it replaced)."""
        return [stored.message for stored in self.store.messages(self.id)]

    def transcript(self) -> list[dict[str, Any]]:
        """Every message ever added, in order, summaries and the turns they replaced included."""
        return self.store.transcript(self.id)

    def add_message(self, message: Mapping[str, Any]) -> None:
        """Append a message (a tool result, say) without sending; checked as in a step file."""
        checked = Message.model_validate(dict(message)).to_api()
        self.store.append(self.id, [checked])

    async def send(
        self,
        text: str | None,
        *,
        stream: bool | None = None,
        on_delta: DeltaCallback | None = None,
    ) -> StepResult:
        """Send ``text`` as the next user turn (None: continue after added tool results) and
        return the answer; the turn is stored once the answer arrived.

        Raises ConfigError when the conversation cannot fit its context window (after the
        strategy, if any), and whatever :meth:`AsyncRunner.run` raises.
        """
        if on_delta is not None and stream is None:
            stream = True
        inputs = {**self.inputs, "text": text if text is not None else ""}
        rendered, request, conn = self.runner.prepare(self.step, inputs, stream=stream)
        assert isinstance(rendered, ChatCompletion)
        new = [request.body["messages"][-1]] if text is not None else []
        stored = self.store.messages(self.id)
        if text is not None:
            _refuse_unanswered_tool_calls([s.message for s in stored])
        window = self._window(rendered, conn.backend)
        messages = await self._fit(stored, new, request, window)
        body = {**request.body, "messages": messages}
        result = await self.runner.execute(
            rendered, Request(request.endpoint, body), conn, on_delta=on_delta
        )
        assert isinstance(result, StepResult)
        self.store.append(self.id, [*new, _answer_message(result)])
        return result

    def _window(self, rendered: ChatCompletion, backend: str) -> int | None:
        if isinstance(rendered.context_window, int):
            return rendered.context_window
        if backend == "local":
            return _local_window()
        lookup = getattr(self.runner.price_table, "context_window", None)
        if callable(lookup):
            found = lookup(rendered.model)
            return found if isinstance(found, int) else None
        from chatstep.accounting.context import context_window_for

        return context_window_for(rendered.model)

    async def _fit(
        self,
        stored: list[StoredMessage],
        new: list[dict[str, Any]],
        request: Request,
        window: int | None,
    ) -> list[dict[str, Any]]:
        """The messages to send: all of them if they fit, else as the strategy says."""
        everything = [s.message for s in stored] + new
        problem = fit_problem({**request.body, "messages": everything}, window)
        if problem is None:
            return everything
        if self.strategy is None:
            raise ConfigError(
                "conversation",
                f"{problem.problem}; the conversation declares no context strategy, and it is "
                "never truncated silently",
                "declare a strategy (sliding_window or summarize; --strategy on the command "
                "line) or start a new conversation",
            )
        head, turns = split_turns([(s.message, s.kind in _PINNED_KINDS) for s in stored])
        if isinstance(self.strategy, SlidingWindow):
            for start in range(1, len(turns) + 1):
                kept = [*head, *(i for turn in turns[start:] for i in turn)]
                messages = [stored[i].message for i in kept] + new
                found = fit_problem({**request.body, "messages": messages}, window)
                if found is None:
                    return messages
                problem = found
        else:
            return await self._summarize(stored, head, turns, new, request, window, problem)
        raise self._gave_up(problem)

    async def _summarize(
        self,
        stored: list[StoredMessage],
        head: list[int],
        turns: list[list[int]],
        new: list[dict[str, Any]],
        request: Request,
        window: int | None,
        problem: ConfigError,
    ) -> list[dict[str, Any]]:
        assert isinstance(self.strategy, Summarize)
        summaries = [i for i in head if stored[i].kind == "summary"]
        kept_head = [i for i in head if stored[i].kind != "summary"]
        keep = min(self.strategy.keep_turns, len(turns))
        for kept_turns in range(keep, -1, -1):
            older = turns[: len(turns) - kept_turns]
            if not older and not summaries:
                continue
            replaced = summaries + [i for t in older for i in t]
            summary = await self._summary_of([stored[i].message for i in replaced], window)
            recent = [stored[i].message for t in turns[len(turns) - kept_turns :] for i in t]
            messages = [stored[i].message for i in kept_head] + [summary] + recent + new
            found = fit_problem({**request.body, "messages": messages}, window)
            if found is None:
                self.store.replace_with_summary(self.id, [stored[i].seq for i in replaced], summary)
                return messages
            problem = found
        raise self._gave_up(problem)

    async def _summary_of(
        self, messages: list[dict[str, Any]], window: int | None
    ) -> dict[str, Any]:
        """One summary message for ``messages``, made in pieces that each fit the summarize
        step's window: each piece is summarized together with the summary so far."""
        step = self._summarize_step(window)
        summary: dict[str, Any] | None = None
        pending: list[dict[str, Any]] = []
        for message in messages:
            candidate = [*pending, message]
            if pending and not self._summary_fits(step, summary, candidate):
                summary = await self._summarize_piece(step, summary, pending)
                candidate = [message]
            pending = candidate
        return await self._summarize_piece(step, summary, pending)

    def _summarize_step(self, window: int | None) -> StepSource:
        assert isinstance(self.strategy, Summarize)
        if self.strategy.step is not None:
            return self.strategy.step  # type: ignore[no-any-return]
        limit = self.strategy.max_tokens
        if window is not None:
            # A summary that takes more than a quarter of the window defeats its purpose.
            limit = min(limit, max(window // 4, 1))
        return ChatCompletion.model_validate(
            {
                "id": f"{self.step.id or 'conversation'}.summarize",
                "model": self.step.model,
                "system_message": SUMMARIZE_SYSTEM_PROMPT,
                "prompt": "{{ inputs.transcript }}",
                "max_tokens": limit,
                **_connection_fields(self.step),
            }
        )

    def _summary_inputs(
        self, summary: dict[str, Any] | None, messages: list[dict[str, Any]]
    ) -> dict[str, Any]:
        earlier = [summary] if summary is not None else []
        return {**self.inputs, "transcript": transcript_text([*earlier, *messages])}

    def _summary_fits(
        self, step: StepSource, summary: dict[str, Any] | None, messages: list[dict[str, Any]]
    ) -> bool:
        try:  # rendered and counted only: nothing is sent
            self.runner.prepare(step, self._summary_inputs(summary, messages))
        except ConfigError:
            return False
        return True

    async def _summarize_piece(
        self, step: StepSource, summary: dict[str, Any] | None, messages: list[dict[str, Any]]
    ) -> dict[str, Any]:
        try:
            result = await self.runner.run(step, self._summary_inputs(summary, messages))
        except ConfigError as error:
            raise ConfigError(
                f"strategy.summarize.{error.field}",
                f"the summarize step cannot run: {error.problem}",
                error.fix,
            ) from error
        content = result.content if isinstance(result, StepResult) else None
        if not isinstance(content, str) or not content.strip():
            raise OutputError(
                "the summarize step answered no text, so the older turns were kept "
                "(check its prompt and max_tokens)"
            )
        return {"role": "system", "content": SUMMARY_PREFIX + content.strip()}

    def _gave_up(self, problem: ConfigError) -> ConfigError:
        name = self.strategy.name if self.strategy is not None else "no"
        return ConfigError(
            "conversation",
            f"even after the {name} strategy, {problem.problem}",
            "shorten the last message, lower max_tokens, or use a model with a larger window",
        )

    async def aclose(self) -> None:
        """Close the conversation's own runner (a runner passed in stays open) and store."""
        if self._own_runner:
            await self.runner.aclose()
        if self._own_store and self.store.persistent:  # the in-memory store is the process's
            self.store.close()

    async def __aenter__(self) -> AsyncConversation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


_CONNECTION_FIELDS = (
    "api_key",
    "organization",
    "project",
    "base_url",
    "api_version",
    "extra_query",
    "timeout",
    "stream_timeout",
    "max_retries",
    "backend",
    "extra_headers",
    "context_window",
    "fallbacks",
)


def _connection_fields(step: ChatCompletion) -> dict[str, Any]:
    """The endpoint settings of a step, for the built-in summarize step to use the same one."""
    fields = type(step).model_fields
    return {name: getattr(step, name) for name in _CONNECTION_FIELDS if name in fields}
