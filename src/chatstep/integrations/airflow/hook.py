"""Apache Airflow: :class:`ChatStepHook` reads chatstep's connection settings from a Connection.

The Connection (default ``openai_default``) is read the way Airflow's OpenAI provider reads it:
password = API key, host = base URL, and ``organization`` / ``project`` from ``extra`` (or its
``openai_client_kwargs``). Its values go in front of chatstep's own secret lookup, so a key or
base URL set in the step still wins, and with no ``openai_default`` Connection chatstep's own
settings (``OPENAI_API_KEY``...) apply. A missing Connection named explicitly is Airflow's error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "chatstep.integrations.airflow needs Apache Airflow 3, which is not installed "
        f'({exc}); install it with: pip install "chatstep[airflow]"'
    ) from exc

if TYPE_CHECKING:
    from chatstep.secrets import SecretStore

__all__ = ["DEFAULT_CONN_ID", "ChatStepHook", "connection_secret_store", "connection_values"]

DEFAULT_CONN_ID = "openai_default"


def connection_values(conn: Any) -> dict[str, str]:
    """The chatstep secrets an Airflow Connection holds, read as Airflow's OpenAI provider does:
    password = key, host = base URL, ``organization`` / ``project`` from ``extra`` (or its
    ``openai_client_kwargs``)."""
    extra = conn.extra_dejson or {}
    client = extra.get("openai_client_kwargs") or {}
    found = {
        "OPENAI_API_KEY": conn.password,
        "OPENAI_BASE_URL": conn.host,
        "OPENAI_ORG_ID": extra.get("organization") or client.get("organization"),
        "OPENAI_PROJECT_ID": extra.get("project") or client.get("project"),
    }
    return {k: str(v) for k, v in found.items() if v}


class ChatStepHook(BaseHook):  # type: ignore[misc]
    """chatstep's secret store for a task, with the Airflow Connection ``conn_id`` in front.

    ``conn_id`` None: no Connection, only chatstep's own lookup. Workers call
    :meth:`secret_store`, triggers (on the triggerer's event loop) :meth:`asecret_store`.
    """

    conn_name_attr = "conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "openai"
    hook_name = "chatstep"

    def __init__(self, conn_id: str | None = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id

    def _store(self, values: dict[str, str]) -> SecretStore:
        from chatstep.secrets import default_secret_store

        return default_secret_store().in_front(values, f"Airflow connection {self.conn_id!r}")

    def _fallback(self) -> None:
        self.log.info(
            "No Airflow connection %r: using chatstep's own settings (OPENAI_API_KEY...)",
            self.conn_id,
        )

    def secret_store(self) -> SecretStore:
        """The secret store: the Connection's values first (when it exists)."""
        values: dict[str, str] = {}
        if self.conn_id:
            try:
                values = connection_values(self.get_connection(self.conn_id))
            except AirflowNotFoundException:
                if self.conn_id != DEFAULT_CONN_ID:
                    raise
                self._fallback()
        return self._store(values)

    async def asecret_store(self) -> SecretStore:
        """:meth:`secret_store` for async code (reads the Connection without blocking)."""
        values: dict[str, str] = {}
        if self.conn_id:
            try:
                values = connection_values(await self.aget_connection(self.conn_id))
            except AirflowNotFoundException:
                if self.conn_id != DEFAULT_CONN_ID:
                    raise
                self._fallback()
        return self._store(values)

    def get_conn(self) -> SecretStore:
        """What a chatstep task connects with: the secret store (Airflow's hook interface)."""
        return self.secret_store()


def connection_secret_store(conn_id: str | None, log: Any = None) -> SecretStore:
    """``ChatStepHook(conn_id).secret_store()`` (``log`` is unused: the hook logs)."""
    return ChatStepHook(conn_id).secret_store()
