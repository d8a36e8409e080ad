"""Every user-written definition refuses unknown keys: one strict pydantic base for all."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from pydantic import BaseModel, ValidationError

import chatstep
from chatstep.steps.strict import StrictModel

# Pydantic models are user-facing definitions in these packages (testing/ models the OpenAI wire
# format, which must accept what servers send, so it is not strict on purpose).
PACKAGES = ("chatstep.steps", "chatstep.flows")


def _models() -> list[type[BaseModel]]:
    for package in PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.iter_modules(root.__path__, package + "."):
            importlib.import_module(info.name)
    found: list[type[BaseModel]] = []
    stack: list[type[BaseModel]] = [BaseModel]
    while stack:
        for sub in stack.pop().__subclasses__():
            stack.append(sub)
            if sub.__module__.startswith(PACKAGES) and "[" not in sub.__name__:
                found.append(sub)
    return found


MODELS = _models()


def test_models_were_found() -> None:
    names = {m.__name__ for m in MODELS}
    assert {"ChatCompletion", "Message", "Tool", "FlowInput", "TaskOptions"} <= names


@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"{m.__module__}.{m.__name__}")
def test_every_definition_is_strict(model: type[BaseModel]) -> None:
    assert issubclass(model, StrictModel)
    assert model.model_config.get("extra") == "forbid"
    assert model.model_config.get("populate_by_name") is True


def test_unknown_key_is_an_error() -> None:
    with pytest.raises(ValidationError, match="temprature"):
        chatstep.ChatCompletion.model_validate({"model": "m", "prompt": "p", "temprature": 1})
