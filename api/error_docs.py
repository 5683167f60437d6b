"""Each route's error answers in the OpenAPI document, found in the code rather than listed by
hand: the errors its endpoint, its dependencies (authentication, rate limits) and the helpers they
call raise or name, the codes they pass as strings (operator refusals), and what the `Chain`
protocol's methods they call declare ("Raises ..." in chains/base.py). Grouped by HTTP status,
each answer names its codes (core.errors.error_catalog is their single source)."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from collections.abc import Callable
from functools import cache
from types import ModuleType
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts

from chains.base import Chain
from core.errors import API_ANSWERS, ERROR_CODES, CustodyError, error_catalog

# Custody's own modules: helpers there are followed; library code is not.
OWN_PACKAGES = ("api", "core", "db", "activities", "models")
ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "object"},
            },
            "required": ["code", "message", "details"],
        }
    },
    "required": ["error"],
}
BY_CLASS_NAME = {cls.__name__: cls for cls in ERROR_CODES.values()}


@cache
def _chain_method_errors() -> dict[str, frozenset[str]]:
    """Chain protocol method -> the codes its docstring says it raises."""
    declared: dict[str, frozenset[str]] = {}
    for name, member in vars(Chain).items():
        doc = inspect.getdoc(member) or ""
        match = re.search(r"Raises ([^.]*)", doc)
        if match:
            names = re.findall(r"[A-Z]\w+", match.group(1))
            declared[name] = frozenset(BY_CLASS_NAME[n].code for n in names if n in BY_CLASS_NAME)
    return declared


def _own(obj: Any) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module.split(".")[0] in OWN_PACKAGES


def _codes_of(func: Callable[..., Any], seen: set[Any]) -> set[str]:
    """Codes `func` raises or names, and those of custody's functions it calls (transitively)."""
    func = inspect.unwrap(func)
    if func in seen or not callable(func):
        return set()
    seen.add(func)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return set()
    scope = getattr(func, "__globals__", {})
    catalog = error_catalog()
    chain_errors = _chain_method_errors()
    codes: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            target = scope.get(node.id)
            codes |= _codes_of_object(target, seen)
        elif isinstance(node, ast.Attribute):
            owner = scope.get(node.value.id) if isinstance(node.value, ast.Name) else None
            if isinstance(owner, ModuleType) and _own(getattr(owner, node.attr, None)):
                codes |= _codes_of_object(getattr(owner, node.attr), seen)
            elif node.attr in chain_errors:
                codes |= chain_errors[node.attr]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in catalog:
            codes.add(node.value)
    return codes


def _codes_of_object(target: Any, seen: set[Any]) -> set[str]:
    if isinstance(target, type) and issubclass(target, CustodyError):
        return {target.code}
    if isinstance(target, tuple):  # a module constant naming several errors
        return set().union(*(_codes_of_object(t, seen) for t in target)) if target else set()
    if (inspect.isfunction(target) or inspect.ismethod(target)) and _own(target):
        return _codes_of(target, seen)
    return set()


def _dependency_calls(route: APIRoute) -> list[Callable[..., Any]]:
    calls: list[Callable[..., Any]] = []
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        if dependant.call is not None:
            calls.append(dependant.call)
            if inspect.isclass(dependant.call) or not inspect.isroutine(dependant.call):
                calls.append(dependant.call.__call__)  # a callable instance (rate limits)
        pending.extend(dependant.dependencies)
    return calls


def route_error_codes(route: APIRoute) -> set[str]:
    """Every error code the route can answer with."""
    seen: set[Any] = set()
    codes = _codes_of(route.endpoint, seen)
    for call in _dependency_calls(route):
        codes |= _codes_of(call, seen)
    if route.body_field is not None or route.dependant.query_params or route.dependant.path_params:
        codes.add("VALIDATION_ERROR")  # FastAPI's own request validation
    catalog = error_catalog()
    # The catch-all answers (INTERNAL_ERROR...) are the error handlers', not the route's.
    return {c for c in codes if catalog.get(c, (None,))[0] is not None and c not in API_ANSWERS}


def error_responses(route: APIRoute) -> dict[str, dict[str, Any]]:
    catalog = error_catalog()
    by_status: dict[int, list[str]] = {}
    for code in sorted(route_error_codes(route)):
        by_status.setdefault(catalog[code][0], []).append(code)  # type: ignore[arg-type]
    return {
        str(status): {
            "description": ", ".join(codes),
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/Error"},
                    "example": {"error": {"code": codes[0], "message": "...", "details": {}}},
                }
            },
        }
        for status, codes in sorted(by_status.items())
    }


def document_errors(app: FastAPI) -> None:
    """Replace app.openapi with one that adds every route's error answers."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
        for context in iter_route_contexts(app.routes):  # routers included with their prefixes
            route = context.route if isinstance(context.route, APIRoute) else context.original_route
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            answers = error_responses(route)
            for method in context.methods or ():
                operation = schema["paths"].get(context.path_format, {}).get(method.lower())
                if operation is None:
                    continue
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)  # FastAPI's own HTTPValidationError shape is not what we answer
                responses.update(answers)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
