"""Which inputs a template reads (``template_variables``, ``collect_input_names``), and
``check_secret_names``: secret names must be literals.

Found by walking Jinja's syntax tree (``jinja2.meta`` sees only top-level names), so
``inputs.x``, ``inputs['x']`` and ``inputs.x.y`` all name ``x``. Orchestrator tasks use this to
declare typed inputs, and runners to report missing inputs before any call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from jinja2 import TemplateSyntaxError, nodes

from chatstep.errors import ConfigError
from chatstep.templating.sandbox import _const_key, _env, _key_path, _syntax_error, is_template

__all__ = ["check_secret_names", "collect_input_names", "template_variables"]


def template_variables(source: str, *, required_only: bool = False, field: str = "") -> set[str]:
    """The names of ``inputs`` a template reads (``inputs.x``, ``inputs['x']``, ``inputs.x.y``).

    With ``required_only``, names read only under ``| default(...)``, ``is defined`` or inside
    ``{% if inputs.x is defined %}`` are left out.
    """
    if not is_template(source):
        return set()
    try:
        ast = _env.parse(source)
    except TemplateSyntaxError as exc:
        raise _syntax_error(exc, field) from None
    required: set[str] = set()
    optional: set[str] = set()
    for name, guarded in _input_references(ast, frozenset()):
        (optional if guarded else required).add(name)
    return required if required_only else required | optional


def collect_input_names(value: Any, *, required_only: bool = False, field: str = "") -> set[str]:
    """The names of ``inputs`` read by any template in a nested structure of dicts and lists."""
    if isinstance(value, str):
        return template_variables(value, required_only=required_only, field=field)
    names: set[str] = set()
    if isinstance(value, Mapping):
        for k, v in value.items():
            names |= collect_input_names(v, required_only=required_only, field=_key_path(field, k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            names |= collect_input_names(v, required_only=required_only, field=f"{field}[{i}]")
    return names


def _input_key(node: nodes.Node) -> str | None:
    """``x`` when ``node`` is ``inputs.x`` or ``inputs['x']``."""
    if isinstance(node, (nodes.Getattr, nodes.Getitem)):
        base = node.node
        if isinstance(base, nodes.Name) and base.name == "inputs" and base.ctx == "load":
            key = node.attr if isinstance(node, nodes.Getattr) else _const_key(node.arg)
            return key if isinstance(key, str) else None
    return None


def _root_input_key(node: nodes.Node) -> str | None:
    """``x`` when ``node`` is ``inputs.x`` or anything below it (``inputs.x.y[0]``)."""
    while isinstance(node, (nodes.Getattr, nodes.Getitem)):
        key = _input_key(node)
        if key is not None:
            return key
        node = node.node
    return None


def _defined_tests(node: nodes.Node) -> set[str]:
    """Input names checked with ``is defined`` anywhere in an expression."""
    names = set()
    tests = [node] if isinstance(node, nodes.Test) else []
    for test in [*tests, *node.find_all(nodes.Test)]:
        if test.name == "defined":
            key = _root_input_key(test.node)
            if key is not None:
                names.add(key)
    return names


_GUARDS = frozenset({"default", "d", "defined", "undefined"})


def _input_references(node: nodes.Node, guarded: frozenset[str]) -> Iterator[tuple[str, bool]]:
    """Each ``inputs`` name read under ``node``, with whether a default or test guards it."""
    if isinstance(node, (nodes.Filter, nodes.Test)) and node.name in _GUARDS:
        key = _root_input_key(node.node) if node.node is not None else None
        if key is not None:
            yield key, True
            for child in (*node.args, *node.kwargs):
                yield from _input_references(child, guarded)
            return
    if isinstance(node, nodes.If):
        yield from _branches(node.test, node.body, [*node.elif_, *node.else_], guarded)
        return
    if isinstance(node, nodes.CondExpr):
        otherwise = [node.expr2] if node.expr2 is not None else []
        yield from _branches(node.test, [node.expr1], otherwise, guarded)
        return
    if isinstance(node, nodes.And):
        yield from _branches(node.left, [node.right], [], guarded)
        return
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
        method = node.node
        if isinstance(method.node, nodes.Name) and method.node.name == "inputs":
            # inputs.get('x', ...) reads x and tolerates its absence; other methods read no name.
            if method.attr == "get" and node.args and isinstance(_const_key(node.args[0]), str):
                yield _const_key(node.args[0]), True
            for child in (*node.args, *node.kwargs):
                yield from _input_references(child, guarded)
            return
    key = _input_key(node)
    if key is not None:
        yield key, key in guarded
        return
    for child in node.iter_child_nodes():
        yield from _input_references(child, guarded)


def _branches(
    test: nodes.Node,
    then: Sequence[nodes.Node],
    otherwise: Sequence[nodes.Node],
    guarded: frozenset[str],
) -> Iterator[tuple[str, bool]]:
    """References in a condition and its branches; ``is defined`` guards the true branch."""
    yield from _input_references(test, guarded)
    inner = guarded | _defined_tests(test)
    for child in then:
        yield from _input_references(child, inner)
    for child in otherwise:
        yield from _input_references(child, guarded)


_SECRET_FIX = (
    "name the secret literally, e.g. {{ secret('OPENAI_API_KEY') }} or {{ secrets.MY_TOKEN }}; "
    "row data must never choose which secret is sent"
)


def check_secret_names(value: Any, field: str = "") -> None:
    """Refuse any template in ``value`` (nested dicts and lists) whose secret name is not a literal.

    ``secret('NAME')``, ``secrets.NAME`` and ``secrets['NAME']`` are allowed; ``secret(x)``,
    ``secrets[inputs.n]`` or any other use of ``secrets`` / ``secret`` (passing them around,
    iterating) raise :class:`~chatstep.errors.ConfigError` naming ``field``: otherwise a row of
    data could pick any environment value and send it to the endpoint.
    """
    if isinstance(value, str):
        if "secret" in value and is_template(value):
            _check_template(value, field)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            check_secret_names(v, _key_path(field, k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_secret_names(v, f"{field}[{i}]")


def _check_template(source: str, field: str) -> None:
    try:
        ast = _env.parse(source)
    except TemplateSyntaxError as exc:
        raise _syntax_error(exc, field) from None
    allowed: set[int] = set()
    for node in ast.find_all((nodes.Call, nodes.Getattr, nodes.Getitem)):
        base = getattr(node, "node", None)
        if not (isinstance(base, nodes.Name) and base.ctx == "load"):
            continue
        if isinstance(node, nodes.Call) and base.name == "secret":
            literal = (
                len(node.args) == 1
                and not node.kwargs
                and node.dyn_args is None
                and node.dyn_kwargs is None
                and isinstance(_const_key(node.args[0]), str)
            )
            if literal:
                allowed.add(id(base))
        elif (isinstance(node, nodes.Getattr) and base.name == "secrets") or (
            isinstance(node, nodes.Getitem)
            and base.name == "secrets"
            and isinstance(_const_key(node.arg), str)
        ):
            allowed.add(id(base))
    for name in ast.find_all(nodes.Name):
        if name.name in ("secret", "secrets") and name.ctx == "load" and id(name) not in allowed:
            raise ConfigError(
                field,
                f"the template uses {name.name} with a name that is not a literal string",
                _SECRET_FIX,
            )
