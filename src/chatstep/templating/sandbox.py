"""Sandboxed Jinja2 rendering of step fields against inputs, outputs and secrets.

Templates see ``inputs``, ``outputs``, ``secrets`` (``secrets.NAME`` or ``secrets['NAME']``) and
``secret('NAME')``, plus the ``tojson`` and ``fromjson`` filters. They run in Jinja's immutable
sandbox with strict undefined values, no autoescaping and whitespace kept as written. Attribute
syntax on a mapping reads its keys first, so an input called ``items`` is ``inputs.items``.

Strings without ``{{``, ``{%`` or ``{#`` never reach Jinja, and values inserted by a template are
never rendered again, so data cannot inject template code. Every failure is a
:class:`chatstep.errors.ChatstepError` naming the field.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import TemplateExpression
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from chatstep.errors import ChatstepError, SecretNotFoundError, TemplateError, redact
from chatstep.secrets import SecretStore, default_secret_store
from chatstep.steps.fields import looks_like_template as is_template
from chatstep.steps.limits import check_step_data
from chatstep.templating import bounds
from chatstep.templating.bounds import (
    MAX_RENDERED_CHARS,
    RenderBudget,
    bound_globals_and_filters,
    check_format,
    check_percent_format,
    check_size,
    check_str_method,
    tick,
)

__all__ = [
    "TemplateContext",
    "is_template",
    "render_string",
    "render_value",
]

_SANDBOX_FIX = "templates may read inputs, outputs and secrets only"
_CACHE_SIZE = 1024
# Bound on `**`, so a template cannot exhaust memory with a huge number.
_MAX_POWER_BITS = 100_000


@dataclass(frozen=True)
class TemplateContext:
    """What a template may read: the run's inputs, earlier steps' outputs, and secrets."""

    inputs: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, Any] = field(default_factory=dict)
    secrets: SecretStore = field(default_factory=default_secret_store)
    budget: RenderBudget = field(default_factory=RenderBudget, compare=False, repr=False)
    """What the templates rendered with this context (one request) have used so far."""
    retrieved: list[dict[str, Any]] | None = None
    """The chunks a step's ``retrieve`` found, seen as ``retrieved``; None: not defined."""


class _UndefinedUse(UndefinedError):
    """An undefined value was used; carries where it came from, to explain it."""

    def __init__(self, message: str, obj: Any, name: Any) -> None:
        super().__init__(message)
        self.obj = obj
        self.name = name


class _Undefined(StrictUndefined):
    """StrictUndefined whose error tells which object lacked which name."""

    __slots__ = ()

    def __init__(
        self, hint: str | None = None, obj: Any = missing, name: str | None = None, exc: Any = None
    ) -> None:
        if exc is None or exc is UndefinedError:
            # Jinja raises `exc(message)`; a partial carries the object and name along with it.
            exc = functools.partial(_UndefinedUse, obj=obj, name=name)
        super().__init__(hint, obj, name, exc)


class _CodeGenerator(CodeGenerator):
    """Compiles ``a ~ b`` to a size-checked join (Jinja's own ``str_join`` has no hook)."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox: mapping keys before attributes; every costly operation bounded and counted."""

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        tick()
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            check_str_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(result, (str, list)):
            check_size(len(result), "a call")
        return result

    def wrap_str_format(self, value: Any) -> Any:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        template = value.__self__

        def checked(*args: Any, **kwargs: Any) -> Any:
            values = [*args, *kwargs.values()]
            if args and isinstance(args[0], Mapping):
                values += list(args[0].values())
            check_format(template, values)
            return wrapper(*args, **kwargs)

        return checked

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        tick()
        if operator == "**":
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and right > 0
                and left.bit_length() * right > _MAX_POWER_BITS
            ):
                raise SecurityError("the result of '**' would be too large")
        elif operator == "*":
            if isinstance(left, int) and isinstance(right, (str, list, tuple)):
                check_size(left * len(right), "'*'")
            elif isinstance(right, int) and isinstance(left, (str, list, tuple)):
                check_size(right * len(left), "'*'")
        elif operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                check_size(len(left) + len(right), "'+'")
        elif operator == "%" and isinstance(left, str):
            check_percent_format(left, right)
        return super().call_binop(context, operator, left, right)

    def checked_concat(self, parts: tuple[Any, ...]) -> str:
        tick()
        texts = [str(part) for part in parts]
        check_size(sum(len(text) for text in texts), "'~'")
        return "".join(texts)


def _tojson(value: Any, indent: int | None = None) -> str:
    """JSON text of ``value``, without the HTML escaping of Jinja's own ``tojson``."""
    return json.dumps(value, ensure_ascii=False, indent=indent, default=_json_default)


def _json_default(value: Any) -> Any:
    # Pydantic models, and values that say how they serialize (result.JSONArguments).
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return to_json()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise TypeError(f"tojson cannot encode a {type(value).__name__} as JSON")


def _fromjson(text: Any) -> Any:
    """The value of a JSON text."""
    if not isinstance(text, (str, bytes, bytearray)):
        raise TypeError(f"fromjson expects JSON text, got a {type(text).__name__}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"fromjson got text that is not JSON: {exc}") from None


_env = _Sandbox(undefined=_Undefined, autoescape=False, keep_trailing_newline=True)
_env.filters["tojson"] = _tojson
_env.filters["fromjson"] = _fromjson
bound_globals_and_filters(_env)


class _Secrets:
    """``secrets`` in a template: looks each name up lazily through the store."""

    __slots__ = ("_field", "_store")

    def __init__(self, store: SecretStore, field: str) -> None:
        self._store = store
        self._field = field

    def __getitem__(self, name: str) -> str:
        if not isinstance(name, str):
            raise KeyError(name)
        value = self._store.find(name, self._field)
        if value is None:
            # An undefined value, so `secrets.X | default('')` and `is defined` work.
            raise KeyError(name)
        return value

    def _lookup(self, name: str) -> str:
        return self._store.get(name, self._field)

    def __repr__(self) -> str:
        return "<secrets>"

    __str__ = __repr__


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile(source: str) -> Template:
    return _env.from_string(source)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile_native(source: str) -> TemplateExpression | None:
    """An expression returning the native value when ``source`` is one ``{{ expr }}``."""
    ast = _env.parse(source)
    if len(ast.body) != 1 or not isinstance(ast.body[0], nodes.Output):
        return None
    parts = [
        n
        for n in ast.body[0].nodes
        if not (isinstance(n, nodes.TemplateData) and not n.data.strip())
    ]
    if len(parts) != 1 or isinstance(parts[0], nodes.TemplateData):
        return None
    body = [nodes.Assign(nodes.Name("result", "store"), parts[0], lineno=parts[0].lineno)]
    return TemplateExpression(_env.from_string(nodes.Template(body, lineno=1)), False)


def render_string(source: str, ctx: TemplateContext, field: str) -> str:
    """Render one template to text; ``field`` names it in errors."""
    return str(_render(source, ctx, field, native=False))


def _render(source: str, ctx: TemplateContext, field: str, *, native: bool) -> Any:
    """Render one template; with ``native``, a lone ``{{ expr }}`` gives the value itself.

    Inputs (rows, ``-i`` values, earlier outputs) may bring text no endpoint can take (a lone
    surrogate): it is refused here, naming the field, not inside the HTTP client.
    """
    if not is_template(source):
        return source
    value = _render_unchecked(source, ctx, field, native=native)
    if isinstance(value, str):
        if not value.isascii():  # ASCII is always sendable: the common case costs one C call
            check_step_data(value, field)
    elif isinstance(value, (dict, list)):
        check_step_data(value, field)
    return value


def _render_unchecked(source: str, ctx: TemplateContext, field: str, *, native: bool) -> Any:
    secrets = _Secrets(ctx.secrets, field)
    names = {
        "inputs": ctx.inputs,
        "outputs": ctx.outputs,
        "secrets": secrets,
        "secret": secrets._lookup,
    }
    if ctx.retrieved is not None:
        names["retrieved"] = ctx.retrieved
    token = bounds.current_budget().set(ctx.budget)
    try:
        expression = _compile_native(source) if native else None
        if expression is None:
            return _render_text(_compile(source), names, ctx.budget)
        value = expression(names)
        if isinstance(value, _Secrets):
            return str(value)
        if isinstance(value, StrictUndefined):
            str(value)  # raises, explaining what is undefined
        if isinstance(value, str):
            check_size(len(value), "the template")
            ctx.budget.add_output(len(value))
        return _copy_containers(value)
    except ChatstepError:
        raise
    except MemoryError:
        error: ChatstepError = TemplateError(
            field,
            "rendering ran out of memory",
            f"templates may build at most {MAX_RENDERED_CHARS:,} characters per field",
        )
    except RecursionError:
        error = TemplateError(
            field,
            "rendering recursed too deep (a macro calling itself without end?)",
            "bound the recursion of the template's macros",
        )
    except Exception as exc:
        error = _template_error(exc, source, ctx, field)
    finally:
        bounds.current_budget().reset(token)
    # Raised outside the except block: the original exception, whose text may quote a secret
    # value, is chained (as __cause__) only when redaction left its text unchanged.
    raise error


def _render_text(template: Template, names: dict[str, Any], budget: RenderBudget) -> str:
    """The template's output, stopped as soon as it passes the size bound."""
    parts: list[str] = []
    size = 0
    for part in template.generate(names):
        size += len(part)
        check_size(size, "the template's output")
        budget.add_output(len(part))
        parts.append(part)
    return "".join(parts)


def _copy_containers(value: Any) -> Any:
    """A copy of nested dicts and lists, so changing a rendered value never changes an input."""
    if isinstance(value, dict):
        return {k: _copy_containers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_containers(v) for v in value]
    return value


def render_value(value: Any, ctx: TemplateContext, field: str, *, native: bool = False) -> Any:
    """Render every string leaf of dicts, lists and tuples; other values are returned as they are.

    Containers are copied, never changed. ``field`` is the path of ``value`` and grows as the
    walk descends (``messages[0].content``). With ``native``, a string that is a lone
    ``{{ expr }}`` becomes the expression's value (a float, a dict, a list...), copied if a
    container; other templates render to strings.
    """
    if isinstance(value, str):
        return _render(value, ctx, field, native=native)
    if isinstance(value, Mapping):
        return {
            k: render_value(v, ctx, _key_path(field, k), native=native) for k, v in value.items()
        }
    if isinstance(value, list):
        return [render_value(v, ctx, f"{field}[{i}]", native=native) for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(
            render_value(v, ctx, f"{field}[{i}]", native=native) for i, v in enumerate(value)
        )
    return value


def _key_path(field: str, key: Any) -> str:
    if isinstance(key, str) and key.isidentifier():
        return f"{field}.{key}" if field else key
    return f"{field}[{key!r}]"


# --- errors -----------------------------------------------------------------------------------


def _template_error(exc: Exception, source: str, ctx: TemplateContext, field: str) -> ChatstepError:
    """The chatstep error that explains ``exc``, raised while rendering ``source``."""
    if isinstance(exc, TemplateSyntaxError):
        return _syntax_error(exc, field)
    line = _template_line(exc.__traceback__) if "\n" in source.rstrip("\n") else None
    error: ChatstepError
    if isinstance(exc, _UndefinedUse):
        error = _undefined_error(exc, source, ctx, field, line)
    elif isinstance(exc, bounds.TemplateBoundError):
        error = TemplateError(
            field,
            f"refused by the template sandbox: {exc}",
            "templates are bounded in size, operations and time (see the README's Limits)",
            line,
        )
    elif isinstance(exc, SecurityError):
        error = TemplateError(field, f"refused by the template sandbox: {exc}", _SANDBOX_FIX, line)
    elif isinstance(exc, UndefinedError):
        error = TemplateError(
            field,
            f"the template uses an undefined value: {exc}",
            "check the names the template uses",
            line,
        )
    else:
        error = TemplateError(
            field,
            f"rendering failed: {type(exc).__name__}: {exc}",
            "check the values the template uses and what it does with them",
            line,
        )
    if redact(str(exc)) == str(exc):
        error.__cause__ = exc
    return error


def _syntax_error(exc: TemplateSyntaxError, field: str) -> TemplateError:
    return TemplateError(
        field,
        f"template syntax error: {exc.message}",
        "fix the template; to write a literal '{{' use {{ '{{' }} or {% raw %}...{% endraw %}",
        exc.lineno,
    )


def _undefined_error(
    exc: _UndefinedUse, source: str, ctx: TemplateContext, field: str, line: int | None
) -> ChatstepError:
    name, obj = exc.name, exc.obj
    if isinstance(obj, _Secrets) and isinstance(name, str):
        return SecretNotFoundError(name, ctx.secrets.searched, field)
    if obj is ctx.inputs:
        return TemplateError(
            field,
            f"the template uses inputs.{name}, but no input {name!r} was given",
            f"pass it with -i {name}=... or inputs={{{name!r}: ...}}",
            line,
        )
    if obj is ctx.outputs:
        available = (
            ", ".join(str(k) for k in ctx.outputs) or "none, no step has run before this one"
        )
        return TemplateError(
            field,
            f"the template uses outputs.{name}, but no step {name!r} has outputs here "
            f"(available outputs: {available})",
            "use the id of a step that runs before this one",
            line,
        )
    if obj is missing and name == "retrieved":
        return TemplateError(
            field,
            "the template uses retrieved, but the step has no retrieve",
            "add retrieve: {index: NAME, query: '{{ inputs.question }}'} to the step",
            line,
        )
    if obj is missing:
        return TemplateError(
            field,
            f"the template uses {name!r}, which is not defined "
            "(templates see inputs, outputs, secrets and secret())",
            f"did you mean inputs.{name}?",
            line,
        )
    paths = _paths_ending_with(source, name)
    what = " or ".join(sorted(paths)) if paths else "a value"
    return TemplateError(
        field,
        f"the template uses {what}, but {exc}",
        "check the name, or give a fallback with | default(...)",
        line,
    )


def _template_line(tb: TracebackType | None) -> int | None:
    """The template line of the innermost template frame in a traceback."""
    line = None
    while tb is not None:
        frame = tb.tb_frame
        template = frame.f_globals.get("__jinja_template__")
        if template is not None:
            line = template.get_corresponding_lineno(tb.tb_lineno)
        elif frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _paths_ending_with(source: str, name: Any) -> set[str]:
    """The dotted paths in ``source`` whose last part is ``name`` (for messages)."""
    found = set()
    for node in _env.parse(source).find_all((nodes.Getattr, nodes.Getitem)):
        last: Any = None
        if isinstance(node, nodes.Getattr):
            last = node.attr
        elif isinstance(node, nodes.Getitem):
            last = _const_key(node.arg)
        if last == name:
            path = _expression_path(node)
            if path is not None:
                found.add(path)
    return found


def _const_key(node: nodes.Node) -> Any:
    return node.value if isinstance(node, nodes.Const) else None


def _expression_path(node: nodes.Node) -> str | None:
    """``inputs.user['name']`` for a chain of names, attributes and constant subscripts."""
    if isinstance(node, nodes.Name):
        return str(node.name)
    if isinstance(node, (nodes.Getattr, nodes.Getitem)):
        base = _expression_path(node.node)
        if base is None:
            return None
        if isinstance(node, nodes.Getattr):
            return f"{base}.{node.attr}"
        key = _const_key(node.arg)
        if isinstance(key, (str, int)) and not isinstance(key, bool):
            return f"{base}[{key!r}]"
    return None
