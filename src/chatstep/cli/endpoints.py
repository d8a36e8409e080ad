"""``chatstep models``, ``chatstep moderate`` and ``chatstep embed``: the other endpoints."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from chatstep.cli.common import print_json, reports_errors

__all__ = ["register"]

BaseURL = Annotated[
    str | None,
    typer.Option("--base-url", help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL)."),
]
Local = Annotated[bool, typer.Option("--local", help="Use the embedded local model.")]


def _connection(base_url: str | None, local: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if base_url:
        out["base_url"] = base_url
    if local:
        out["backend"] = "local"
    return out


def models(
    base_url: BaseURL = None,
    local: Local = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the model objects as JSON.")
    ] = False,
) -> None:
    """List the models the endpoint offers."""
    from chatstep.core.calls import run_sync
    from chatstep.core.runner import AsyncRunner
    from chatstep.steps.definitions import ChatCompletion

    async def fetch() -> list[dict[str, Any]]:
        async with AsyncRunner() as runner:
            step = ChatCompletion(model="-", prompt="-", **_connection(base_url, local))
            return await runner.list_models(step)

    with reports_errors():
        data = run_sync(fetch())
        if as_json:
            print_json(data)
        else:
            for item in sorted(data, key=lambda m: str(m.get("id"))):
                typer.echo(str(item.get("id")))


def moderate(
    text: Annotated[
        list[str], typer.Argument(help="Text to classify; several are classified together.")
    ],
    model: Annotated[str, typer.Option(help="Moderation model.")] = "omni-moderation-latest",
    base_url: BaseURL = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole result as JSON.")
    ] = False,
) -> None:
    """Classify text for policy categories."""
    from chatstep.core.calls import run_step
    from chatstep.core.result import ModerationResult
    from chatstep.steps.definitions import Moderation

    with reports_errors():
        step = Moderation(
            model=model, input=text if len(text) > 1 else text[0], **_connection(base_url, False)
        )
        result = run_step(step)
        assert isinstance(result, ModerationResult)
        if as_json:
            print_json(result.to_dict())
            return
        for item, res in zip(text, result.results, strict=False):
            flagged = [name for name, on in (res.get("categories") or {}).items() if on]
            verdict = f"flagged: {', '.join(flagged)}" if res.get("flagged") else "not flagged"
            typer.echo(f"{verdict}\t{item}")


def embed(
    text: Annotated[list[str], typer.Argument(help="Text to embed; one vector per argument.")],
    model: Annotated[str, typer.Option(help="Embedding model.")] = "text-embedding-3-small",
    dimensions: Annotated[int | None, typer.Option(help="Shorten vectors to this size.")] = None,
    base_url: BaseURL = None,
    local: Local = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole result as JSON.")
    ] = False,
) -> None:
    """Embed text and print the vectors as JSON."""
    from chatstep.core.calls import run_step
    from chatstep.core.result import EmbeddingResult
    from chatstep.steps.definitions import Embedding

    with reports_errors():
        extra: dict[str, Any] = {"dimensions": dimensions} if dimensions else {}
        step = Embedding(
            model=model,
            input=text if len(text) > 1 else text[0],
            **extra,
            **_connection(base_url, local),
        )
        result = run_step(step)
        assert isinstance(result, EmbeddingResult)
        print_json(result.to_dict() if as_json else result.vectors)


def register(app: typer.Typer) -> None:
    """Add ``models``, ``moderate`` and ``embed`` to the app."""
    app.command("models")(models)
    app.command("moderate")(moderate)
    app.command("embed")(embed)
