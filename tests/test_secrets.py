"""Secret providers and the secret store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chatstep.errors import ConfigError, SecretNotFoundError, redact
from chatstep.secrets import (
    DotenvFileSecrets,
    EnvironmentSecrets,
    SecretsDirectory,
    SecretStore,
    StaticSecrets,
    default_secret_store,
    validate_secret_name,
)

# Distinctive values: the store registers every value it returns for redaction, process-wide.
ENV_VALUE = "env-value-3b9f1c"
DOTENV_VALUE = "dotenv-value-7a2e4d"
DIR_VALUE = "dir-value-91c0ff"


@pytest.fixture
def sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A .env file and a secrets directory, with no CHATSTEP_TEST_* in the environment."""
    for name in list(os.environ):
        if name.startswith("CHATSTEP_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("CHATSTEP_SECRETS_DIR", raising=False)
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        f"CHATSTEP_TEST_BOTH={DOTENV_VALUE}\n"
        f"CHATSTEP_TEST_DOTENV={DOTENV_VALUE}\n"
        f"CHATSTEP_TEST_ALL={DOTENV_VALUE}\n"
        "CHATSTEP_TEST_BLANK=\n"
        "CHATSTEP_TEST_NOVALUE\n",
        encoding="utf-8",
    )
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for name in ("CHATSTEP_TEST_ALL", "CHATSTEP_TEST_DIR", "CHATSTEP_TEST_BOTH"):
        (secrets_dir / name).write_text(DIR_VALUE + "\n", encoding="utf-8")
    return dotenv, secrets_dir


def test_environment_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATSTEP_TEST_ENV", ENV_VALUE)
    monkeypatch.setenv("CHATSTEP_TEST_EMPTY", "")
    monkeypatch.delenv("CHATSTEP_TEST_UNSET", raising=False)
    provider = EnvironmentSecrets()
    assert provider.name == "environment"
    assert provider.find("CHATSTEP_TEST_ENV") == ENV_VALUE
    assert provider.find("CHATSTEP_TEST_EMPTY") is None
    assert provider.find("CHATSTEP_TEST_UNSET") is None


def test_dotenv_provider_reads_without_touching_environ(sources: tuple[Path, Path]) -> None:
    dotenv, _ = sources
    before = dict(os.environ)
    provider = DotenvFileSecrets(dotenv)
    assert provider.find("CHATSTEP_TEST_DOTENV") == DOTENV_VALUE
    assert provider.find("CHATSTEP_TEST_BLANK") is None
    assert provider.find("CHATSTEP_TEST_NOVALUE") is None
    assert provider.find("CHATSTEP_TEST_ABSENT") is None
    assert dict(os.environ) == before
    assert provider.name == f".env file {dotenv}"


def test_dotenv_provider_sees_an_edited_file(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("CHATSTEP_TEST_EDIT=first-value-0001\n", encoding="utf-8")
    provider = DotenvFileSecrets(dotenv)
    assert provider.find("CHATSTEP_TEST_EDIT") == "first-value-0001"
    dotenv.write_text("CHATSTEP_TEST_EDIT=second-longer-value-0002\n", encoding="utf-8")
    assert provider.find("CHATSTEP_TEST_EDIT") == "second-longer-value-0002"


def test_dotenv_provider_without_a_file(tmp_path: Path) -> None:
    assert DotenvFileSecrets(tmp_path / "missing.env").find("ANYTHING") is None


def test_dotenv_path_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert DotenvFileSecrets().path == tmp_path / ".env"


def test_secrets_directory_strips_trailing_newline(sources: tuple[Path, Path]) -> None:
    _, secrets_dir = sources
    (secrets_dir / "crlf-name.txt").write_text("crlf-value-55aa\r\n", encoding="utf-8")
    (secrets_dir / "blank").write_text("\n", encoding="utf-8")
    provider = SecretsDirectory(secrets_dir)
    assert provider.find("CHATSTEP_TEST_DIR") == DIR_VALUE
    assert provider.find("crlf-name.txt") == "crlf-value-55aa"
    assert provider.find("blank") is None
    assert provider.find("CHATSTEP_TEST_ABSENT") is None
    assert provider.name == f"secrets directory {secrets_dir}"


def test_secrets_directory_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CHATSTEP_SECRETS_DIR", raising=False)
    assert SecretsDirectory().directory == Path("/run/secrets")
    monkeypatch.setenv("CHATSTEP_SECRETS_DIR", str(tmp_path))
    assert SecretsDirectory().directory == tmp_path


def test_secrets_directory_missing_directory(tmp_path: Path) -> None:
    assert SecretsDirectory(tmp_path / "nowhere").find("X") is None


def test_secrets_directory_ignores_subdirectories(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    assert SecretsDirectory(tmp_path).find("sub") is None


@pytest.mark.parametrize(
    "name", ["../x", "..", ".", "a/b", "/etc/passwd", ".hidden", "", "a\x00b", "a\\b", "x" * 300]
)
def test_bad_secret_names_are_refused(name: str, tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "x").write_text("outside-value-a1b2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a valid secret name"):
        SecretsDirectory(tmp_path / "secrets").find(name)
    with pytest.raises(ConfigError, match="not a valid secret name") as info:
        SecretStore([SecretsDirectory(tmp_path / "secrets")]).get(name, field="api_key")
    assert info.value.field == "api_key"


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "openai-api-key", "key.txt", "_X", "9lives"])
def test_good_secret_names(name: str) -> None:
    validate_secret_name(name)


def test_provider_order(sources: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv, secrets_dir = sources
    store = default_secret_store(dotenv_path=dotenv, secrets_dir=secrets_dir)
    # CHATSTEP_TEST_ALL is in .env and the directory; the environment beats both.
    monkeypatch.setenv("CHATSTEP_TEST_ALL", ENV_VALUE)
    assert store.get("CHATSTEP_TEST_ALL") == ENV_VALUE
    # .env beats the directory.
    assert store.get("CHATSTEP_TEST_BOTH") == DOTENV_VALUE
    # The directory is the last resort.
    assert store.get("CHATSTEP_TEST_DIR") == DIR_VALUE
    # A blank environment variable does not hide the .env value.
    monkeypatch.setenv("CHATSTEP_TEST_DOTENV", "")
    assert store.get("CHATSTEP_TEST_DOTENV") == DOTENV_VALUE


def test_environment_is_read_at_lookup_time(monkeypatch: pytest.MonkeyPatch) -> None:
    store = SecretStore([EnvironmentSecrets()])
    monkeypatch.delenv("CHATSTEP_TEST_LATE", raising=False)
    assert store.find("CHATSTEP_TEST_LATE") is None
    monkeypatch.setenv("CHATSTEP_TEST_LATE", "late-value-c3d4")
    assert store.find("CHATSTEP_TEST_LATE") == "late-value-c3d4"


def test_missing_secret_names_every_provider(sources: tuple[Path, Path]) -> None:
    dotenv, secrets_dir = sources
    store = default_secret_store(dotenv_path=dotenv, secrets_dir=secrets_dir)
    assert store.find("CHATSTEP_TEST_NOWHERE") is None
    with pytest.raises(SecretNotFoundError) as info:
        store.get("CHATSTEP_TEST_NOWHERE", field="messages[0].content")
    err = info.value
    assert err.name == "CHATSTEP_TEST_NOWHERE"
    assert err.field == "messages[0].content"
    searched = f"environment, .env file {dotenv}, secrets directory {secrets_dir}"
    assert searched in str(err)
    assert str(err).startswith("messages[0].content: secret 'CHATSTEP_TEST_NOWHERE'")


def test_default_store_uses_working_directory_and_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("CHATSTEP_TEST_CWD=cwd-value-e5f6\n", encoding="utf-8")
    secrets_dir = tmp_path / "mounted"
    secrets_dir.mkdir()
    (secrets_dir / "CHATSTEP_TEST_MOUNTED").write_text("mounted-value-0a0b", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHATSTEP_SECRETS_DIR", str(secrets_dir))
    store = default_secret_store()
    assert store.get("CHATSTEP_TEST_CWD") == "cwd-value-e5f6"
    assert store.get("CHATSTEP_TEST_MOUNTED") == "mounted-value-0a0b"
    assert [p.name for p in store.providers] == [
        "environment",
        f".env file {tmp_path / '.env'}",
        f"secrets directory {secrets_dir}",
    ]
    # SecretStore() with no providers is the same chain.
    assert SecretStore().searched == store.searched


def test_returned_values_are_redacted_from_errors() -> None:
    value = "registered-value-77e1"
    store = SecretStore([StaticSecrets({"TOKEN": value})])
    assert redact(f"before {value} after") == f"before {value} after"
    assert store.get("TOKEN") == value
    assert redact(f"before {value} after") == "before *** after"
    err = ConfigError("api_key", f"the key {value} was refused")
    assert value not in str(err)


def test_repr_shows_no_values(sources: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv, secrets_dir = sources
    monkeypatch.setenv("CHATSTEP_TEST_ENV", ENV_VALUE)
    static = StaticSecrets({"CHATSTEP_TEST_STATIC": "static-value-9d8c"})
    store = SecretStore([*default_secret_store(dotenv, secrets_dir).providers, static])
    for name in ("CHATSTEP_TEST_ENV", "CHATSTEP_TEST_BOTH", "CHATSTEP_TEST_DIR"):
        store.get(name)
    text = repr(store) + "".join(repr(p) for p in store.providers)
    for value in (ENV_VALUE, DOTENV_VALUE, DIR_VALUE, "static-value-9d8c"):
        assert value not in text
    assert "environment" in repr(store)
    assert str(dotenv) in repr(store)
    assert "CHATSTEP_TEST_STATIC" in repr(static)


def test_empty_store() -> None:
    store = SecretStore([])
    with pytest.raises(SecretNotFoundError, match="no secret providers"):
        store.get("X")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "LOCKED"
    path.write_text("locked-value-1234", encoding="utf-8")
    path.chmod(0)
    with pytest.raises(ConfigError, match="cannot be read"):
        SecretsDirectory(tmp_path).find("LOCKED")


def test_binary_secret_file(tmp_path: Path) -> None:
    (tmp_path / "BINARY").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        SecretsDirectory(tmp_path).find("BINARY")
