"""Secret providers: environment variables, a ``.env`` file, a secrets directory.

A :class:`SecretStore` asks its providers in order and returns the first value found. Every value
it returns is registered with :func:`chatstep.errors.register_secret`, so no error message can
quote it. Values are never logged, printed or shown by ``repr``.

An empty value counts as absent, so ``OPENAI_API_KEY=`` left blank by a compose file or a shell
does not hide the value in ``.env`` or the secrets directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from dotenv import dotenv_values

from chatstep.errors import ConfigError, SecretNotFoundError, register_secret

__all__ = [
    "DotenvFileSecrets",
    "EnvironmentSecrets",
    "SecretProvider",
    "SecretStore",
    "SecretsDirectory",
    "StaticSecrets",
    "default_secret_store",
    "validate_secret_name",
]

DEFAULT_SECRETS_DIR = "/run/secrets"
SECRETS_DIR_VARIABLE = "CHATSTEP_SECRETS_DIR"

# Letters, digits, '_', '-' and '.', not starting with '.': env variable names, Docker secret
# names and Kubernetes secret keys all fit, and no name can leave the secrets directory.
_SECRET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}")


def validate_secret_name(name: str, field: str = "") -> None:
    """Raise :class:`ConfigError` unless ``name`` is a usable secret name."""
    if not isinstance(name, str) or not _SECRET_NAME.fullmatch(name):
        raise ConfigError(
            field,
            f"{name!r} is not a valid secret name",
            "use letters, digits, '_', '-' and '.', not starting with '.' "
            "(for example OPENAI_API_KEY)",
        )


@runtime_checkable
class SecretProvider(Protocol):
    """A place secrets are looked up in; ``name`` describes it in error messages."""

    @property
    def name(self) -> str: ...

    def find(self, name: str) -> str | None:
        """The secret's value, or None when this provider does not have it."""
        ...


class EnvironmentSecrets:
    """Secrets from environment variables, read at lookup time."""

    @property
    def name(self) -> str:
        return "environment"

    def find(self, name: str) -> str | None:
        return os.environ.get(name) or None

    def __repr__(self) -> str:
        return "EnvironmentSecrets()"


# Parsed .env files by absolute path, with the (mtime, size, inode) they were parsed at, so a
# lookup per dataset row does not re-parse the file, yet an edited file is read again.
_dotenv_cache: dict[Path, tuple[tuple[int, int, int], dict[str, str | None]]] = {}


class DotenvFileSecrets:
    """Secrets from a ``.env`` file, parsed without touching ``os.environ``."""

    def __init__(self, path: str | os.PathLike[str] = ".env") -> None:
        self.path = Path(path).absolute()

    @property
    def name(self) -> str:
        return f".env file {self.path}"

    def find(self, name: str) -> str | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        cached = _dotenv_cache.get(self.path)
        if cached is None or cached[0] != signature:
            try:
                values = dict(dotenv_values(self.path, encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    "",
                    f"the .env file {self.path} cannot be read ({type(exc).__name__})",
                    "make it a readable UTF-8 text file, or remove it",
                ) from None
            cached = (signature, values)
            _dotenv_cache[self.path] = cached
        return cached[1].get(name) or None

    def __repr__(self) -> str:
        return f"DotenvFileSecrets({str(self.path)!r})"


class SecretsDirectory:
    """Secrets mounted as one file per secret, as Docker and Kubernetes do.

    The directory is ``$CHATSTEP_SECRETS_DIR`` when set, else ``/run/secrets``. A trailing
    newline in a file is stripped.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        if directory is None:
            directory = os.environ.get(SECRETS_DIR_VARIABLE) or DEFAULT_SECRETS_DIR
        self.directory = Path(directory).absolute()

    @property
    def name(self) -> str:
        return f"secrets directory {self.directory}"

    def find(self, name: str) -> str | None:
        # Checked here too, as a provider may be used on its own: the name becomes a path.
        validate_secret_name(name)
        path = self.directory / name
        try:
            text = path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except PermissionError:
            raise ConfigError(
                "",
                f"secret {name!r} exists in {self.directory} but cannot be read",
                "make the file readable by the user running chatstep",
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(
                "",
                f"secret file {path} is not UTF-8 text",
                "store the secret as text, e.g. with a trailing newline at most",
            ) from None
        return text.rstrip("\r\n") or None

    def __repr__(self) -> str:
        return f"SecretsDirectory({str(self.directory)!r})"


class StaticSecrets:
    """Secrets given as a mapping, e.g. from Python code or a test."""

    def __init__(self, values: Mapping[str, str], name: str = "given secrets") -> None:
        self._values = dict(values)
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def find(self, name: str) -> str | None:
        return self._values.get(name) or None

    def __repr__(self) -> str:
        # Names only: the values are secrets.
        return f"StaticSecrets(name={self._name!r}, keys={sorted(self._values)!r})"


class SecretStore:
    """Looks secrets up through providers, in order; the first value found wins."""

    def __init__(self, providers: Iterable[SecretProvider] | None = None) -> None:
        self.providers: tuple[SecretProvider, ...] = (
            tuple(providers) if providers is not None else _default_providers()
        )

    def in_front(
        self, values: Mapping[str, str | None], name: str = "given secrets"
    ) -> SecretStore:
        """This store with ``values`` (empty ones dropped) looked up before its providers."""
        given = {k: v for k, v in values.items() if v}
        return SecretStore([StaticSecrets(given, name), *self.providers]) if given else self

    @property
    def searched(self) -> str:
        """The providers, described for an error message."""
        return ", ".join(p.name for p in self.providers) or "no secret providers"

    def find(self, name: str, field: str = "", *, sensitive: bool = True) -> str | None:
        """The secret's value, or None when no provider has it.

        A sensitive value is registered for redaction; settings that merely live beside the
        secrets (``OPENAI_BASE_URL``, an organization id) pass ``sensitive=False`` so that error
        messages and journals may still show them.
        """
        validate_secret_name(name, field)
        for provider in self.providers:
            value = provider.find(name)
            if value is not None:
                if sensitive:
                    register_secret(value)
                return value
        return None

    def get(self, name: str, field: str = "") -> str:
        """The secret's value; raises :class:`SecretNotFoundError` naming ``field`` when missing."""
        value = self.find(name, field)
        if value is None:
            raise SecretNotFoundError(name, self.searched, field)
        return value

    def __repr__(self) -> str:
        return f"SecretStore(providers={[p.name for p in self.providers]!r})"


def _default_providers(
    dotenv_path: str | os.PathLike[str] | None = None,
    secrets_dir: str | os.PathLike[str] | None = None,
) -> tuple[SecretProvider, ...]:
    return (
        EnvironmentSecrets(),
        DotenvFileSecrets(dotenv_path if dotenv_path is not None else ".env"),
        SecretsDirectory(secrets_dir),
    )


def default_secret_store(
    dotenv_path: str | os.PathLike[str] | None = None,
    secrets_dir: str | os.PathLike[str] | None = None,
) -> SecretStore:
    """The standard chain: environment, then ``./.env``, then the secrets directory.

    Reads ``$CHATSTEP_SECRETS_DIR`` and the working directory on each call; building one is cheap.
    """
    return SecretStore(_default_providers(dotenv_path, secrets_dir))
