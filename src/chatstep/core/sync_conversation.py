"""The synchronous :class:`Conversation`: an :class:`~chatstep.core.conversation.AsyncConversation`
driven through a :class:`~chatstep.Runner`'s private loop (as :class:`~chatstep.Runner` wraps
:class:`~chatstep.AsyncRunner`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chatstep.core.conversation import AsyncConversation, StrategySpec
from chatstep.core.result import StepResult
from chatstep.core.runner import DeltaCallback, StepSource
from chatstep.core.sync_runner import Runner
from chatstep.storage.conversations import ConversationStore

__all__ = ["Conversation"]


class Conversation:
    """A persisted conversation for synchronous code; the twin of :class:`AsyncConversation`.

    Takes what :class:`AsyncConversation` takes, with a :class:`~chatstep.Runner` as ``runner``
    (without one it opens its own; close it with :meth:`close` or a ``with`` block).
    ``send(text)`` returns the answer as a :class:`~chatstep.StepResult`; ``messages`` is what
    the next request starts from; ``id`` reopens it with :meth:`load`, in any process.
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
        runner: Runner | None = None,
        store: ConversationStore | None = None,
        _async: AsyncConversation | None = None,
    ) -> None:
        self._own_runner = runner is None
        self.runner = runner if runner is not None else Runner()
        try:
            self._conversation = _async or AsyncConversation(
                model,
                system=system,
                step=step,
                inputs=inputs,
                name=name,
                strategy=strategy,
                context_window=context_window,
                runner=self.runner.async_runner,
                store=store,
            )
        except BaseException:
            if self._own_runner:
                self.runner.close()
            raise

    @classmethod
    def load(
        cls,
        conversation_id: str,
        *,
        model: str | None = None,
        strategy: StrategySpec = None,
        context_window: int | None = None,
        runner: Runner | None = None,
        store: ConversationStore | None = None,
    ) -> Conversation:
        """Open a stored conversation by id or unique id prefix (ConfigError when none)."""
        own = runner or Runner()
        try:
            opened = AsyncConversation.load(
                conversation_id,
                model=model,
                strategy=strategy,
                context_window=context_window,
                runner=own.async_runner,
                store=store,
            )
        except BaseException:
            if runner is None:
                own.close()
            raise
        conversation = cls(runner=own, _async=opened)
        conversation._own_runner = runner is None
        return conversation

    @classmethod
    def latest(
        cls,
        *,
        model: str | None = None,
        strategy: StrategySpec = None,
        runner: Runner | None = None,
        store: ConversationStore | None = None,
    ) -> Conversation | None:
        """The conversation used last, or None when there is none."""
        own = runner or Runner()
        opened = AsyncConversation.latest(
            model=model, strategy=strategy, runner=own.async_runner, store=store
        )
        if opened is None:
            if runner is None:
                own.close()
            return None
        conversation = cls(runner=own, _async=opened)
        conversation._own_runner = runner is None
        return conversation

    @property
    def id(self) -> str:
        """The conversation's id (a ULID)."""
        return self._conversation.id

    @property
    def name(self) -> str | None:
        return self._conversation.name

    @property
    def model(self) -> str:
        return self._conversation.step.model

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The messages the next request starts from (a summary stands for what it replaced)."""
        return self._conversation.messages

    def transcript(self) -> list[dict[str, Any]]:
        """Every message ever added, summaries and the turns they replaced included."""
        return self._conversation.transcript()

    def add_message(self, message: Mapping[str, Any]) -> None:
        """Append a message (a tool result, say) without sending."""
        self._conversation.add_message(message)

    def send(
        self,
        text: str | None,
        *,
        stream: bool | None = None,
        on_delta: DeltaCallback | None = None,
    ) -> StepResult:
        """Send the next user turn and return the answer (see :meth:`AsyncConversation.send`)."""
        self.runner._check_open()
        return self.runner._call(self._conversation.send(text, stream=stream, on_delta=on_delta))

    def close(self) -> None:
        """Close the conversation's own runner (a runner passed in stays open)."""
        store = self._conversation.store
        if self._conversation._own_store and store.persistent:
            store.close()
        if self._own_runner:
            self.runner.close()

    def __enter__(self) -> Conversation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
