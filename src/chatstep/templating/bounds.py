"""Bounds on what a template may cost: output size, width arguments, operations and time.

Every rendering runs under a :class:`RenderBudget`: a template's output (per field) may be at
most :data:`MAX_RENDERED_CHARS`, all fields of one request together at most
:data:`MAX_REQUEST_CHARS`; a rendering may take :data:`MAX_TEMPLATE_OPERATIONS` sandbox
operations (calls, attribute reads, operators, range items) and :data:`MAX_RENDER_SECONDS`.
Operations that would build a huge value (``'a'|center(2000000000)``, ``'%2000000000d'|format``,
``'{:>2000000000}'.format(x)``, ``'a' * 10**9``, a doubling ``replace`` or ``~``...) are refused
*before* they allocate. Each refusal is a ``SecurityError``, which the sandbox turns into a
:class:`~chatstep.errors.TemplateError` naming the field.
"""

from __future__ import annotations

import contextvars
import functools
import re
import string
import time
from collections.abc import Iterable, Iterator
from typing import Any

from jinja2 import Environment
from jinja2.exceptions import SecurityError

__all__ = [
    "MAX_RENDERED_CHARS",
    "MAX_RENDER_SECONDS",
    "MAX_REQUEST_CHARS",
    "MAX_TEMPLATE_OPERATIONS",
    "BoundedRange",
    "RenderBudget",
    "TemplateBoundError",
    "bound_globals_and_filters",
    "check_format",
    "check_join",
    "check_percent_format",
    "check_size",
    "check_str_method",
    "current_budget",
    "tick",
]

MAX_RENDERED_CHARS = 4_000_000
"""Largest value (characters, or items of a list) one template may build or output."""
MAX_REQUEST_CHARS = 16_000_000
"""Most characters all templates of one request may output together."""
MAX_TEMPLATE_OPERATIONS = 2_000_000
"""Most sandbox operations (calls, attribute reads, operators, range items) per request."""
MAX_RENDER_SECONDS = 10.0
"""Longest time rendering the templates of one request may take."""

_CHECK_EVERY = 1024


class TemplateBoundError(SecurityError):
    """A template passed one of the bounds (size, operations, time)."""


class RenderBudget:
    """What the templates of one request have used so far."""

    __slots__ = ("deadline", "operations", "output")

    def __init__(self) -> None:
        self.operations = 0
        self.output = 0
        self.deadline = time.monotonic() + MAX_RENDER_SECONDS

    def tick(self, count: int = 1) -> None:
        before = self.operations
        self.operations += count
        if self.operations > MAX_TEMPLATE_OPERATIONS:
            raise TemplateBoundError(
                f"the template took more than {MAX_TEMPLATE_OPERATIONS:,} operations"
            )
        if before // _CHECK_EVERY != self.operations // _CHECK_EVERY and (
            time.monotonic() > self.deadline
        ):
            raise TemplateBoundError(f"rendering took longer than {MAX_RENDER_SECONDS:g} seconds")

    def add_output(self, chars: int) -> None:
        self.output += chars
        if self.output > MAX_REQUEST_CHARS:
            raise TemplateBoundError(
                f"the templates of this request rendered more than {MAX_REQUEST_CHARS:,} characters"
            )


_current: contextvars.ContextVar[RenderBudget | None] = contextvars.ContextVar(
    "chatstep_render_budget", default=None
)


def current_budget() -> contextvars.ContextVar[RenderBudget | None]:
    """The context variable holding the budget of the rendering in progress."""
    return _current


def tick(count: int = 1) -> None:
    """Count sandbox operations against the current budget (none outside a rendering)."""
    budget = _current.get()
    if budget is not None:
        budget.tick(count)


def check_size(size: int, what: str) -> None:
    """Refuse a value of ``size`` characters or items before it is built."""
    if size > MAX_RENDERED_CHARS:
        raise TemplateBoundError(
            f"{what} would build a value of {size:,} characters or items "
            f"(at most {MAX_RENDERED_CHARS:,})"
        )


def _int_arg(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def check_str_method(obj: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse a str method call whose result would be too large."""
    if name in ("center", "ljust", "rjust", "zfill"):
        width = _int_arg(args[0] if args else kwargs.get("width"))
        check_size(width, f"str.{name}")
    elif name == "expandtabs":
        size = _int_arg(args[0] if args else kwargs.get("tabsize", 8))
        check_size(len(obj) + obj.count("\t") * size, "str.expandtabs")
    elif name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        if isinstance(old, str) and isinstance(new, str):
            count = obj.count(old) if old else len(obj) + 1
            if len(args) > 2 and _int_arg(args[2]) >= 0 and isinstance(args[2], int):
                count = min(count, args[2])
            check_size(len(obj) + count * max(0, len(new) - len(old)), "str.replace")
    elif name == "join" and args:
        check_join(args[0], obj)


def check_join(items: Any, separator: str = "") -> None:
    """Refuse a join whose result would be too large."""
    if isinstance(items, (list, tuple)):
        size = len(separator) * max(0, len(items) - 1)
        for item in items:
            size += len(item) if isinstance(item, str) else 8
            check_size(size, "join")


_WIDTH = re.compile(r"\d+")


def check_format(template: str, args: Iterable[Any]) -> None:
    """Refuse ``str.format`` with a huge width or precision (literal or nested)."""
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError:
        return  # str.format raises its own error
    for _, _, spec, _ in fields:
        if not spec:
            continue
        if "{" in spec:
            for value in args:
                check_size(_int_arg(value), "a nested format width")
        for digits in _WIDTH.findall(spec):
            check_size(int(digits[:12]), "a format width")


_PERCENT = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def check_percent_format(template: str, args: Any) -> None:
    """Refuse ``'%2000000000d' % x`` (and ``%*d``) before it allocates."""
    if "%" not in template:
        return
    values = args if isinstance(args, tuple) else (args,)
    for width, precision in _PERCENT.findall(template):
        for part in (width, precision):
            if part == "*":
                for value in values:
                    check_size(_int_arg(value), "a % format width")
            elif part:
                check_size(int(part[:12]), "a % format width")


class BoundedRange:
    """``range`` whose items count as operations when iterated (so nested loops stay bounded)."""

    __slots__ = ("_range",)

    def __init__(self, *args: int) -> None:
        self._range = range(*args)
        check_size(len(self._range), "range")

    def __iter__(self) -> Iterator[int]:
        for item in self._range:
            tick()
            yield item

    def __len__(self) -> int:
        return len(self._range)

    def __getitem__(self, index: Any) -> Any:
        return self._range[index]

    def __contains__(self, item: Any) -> bool:
        return item in self._range

    def __repr__(self) -> str:
        return repr(self._range)


def _bounded_filter(env: Environment, name: str, check: Any) -> None:
    """Wrap Jinja's filter ``name`` so ``check(value, *args, **kwargs)`` runs first."""
    original = env.filters[name]

    @functools.wraps(original)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        tick()
        # Filters marked pass_eval_context / pass_environment get that object first.
        check(*(args[1:] if hasattr(original, "jinja_pass_arg") else args), **kwargs)
        result = original(*args, **kwargs)
        if isinstance(result, (str, list)):
            check_size(len(result), f"the {name} filter")
        return result

    env.filters[name] = bounded


def _width(value: Any, width: Any = 80, *_: Any, **__: Any) -> None:
    check_size(width if isinstance(width, int) else 0, "the center filter")


def _indent(value: Any, width: Any = 4, *_: Any, **__: Any) -> None:
    lines = str(value).count("\n") + 1
    size = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    check_size(len(str(value)) + lines * size, "the indent filter")


def _format(value: Any, *args: Any, **kwargs: Any) -> None:
    check_percent_format(str(value), tuple(args) or tuple(kwargs.values()))


def _join(value: Any, d: Any = "", *_: Any, **__: Any) -> None:
    check_join(value, d if isinstance(d, str) else "")


def _replace(value: Any, old: Any = "", new: Any = "", count: Any = None, **_: Any) -> None:
    args = (old, new) if count is None else (old, new, count)
    check_str_method(str(value), "replace", args, {})


def _wordwrap(value: Any, width: Any = 79, *_: Any, **__: Any) -> None:
    check_size(len(str(value)) * 2, "the wordwrap filter")


def bound_globals_and_filters(env: Environment) -> None:
    """Replace ``range`` and ``lipsum`` and wrap the costly filters of ``env`` with bounds."""
    env.globals["range"] = BoundedRange
    original_lipsum: Any = env.globals["lipsum"]

    def lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
        check_size(int(n) * int(max) * 12, "lipsum")
        return str(original_lipsum(n, html, min, max))

    env.globals["lipsum"] = lipsum
    for name, check in (
        ("center", _width),
        ("indent", _indent),
        ("format", _format),
        ("join", _join),
        ("replace", _replace),
        ("wordwrap", _wordwrap),
    ):
        _bounded_filter(env, name, check)
