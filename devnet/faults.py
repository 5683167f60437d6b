"""The fault table behind the local KMS servers' error injection: rules keyed by operation,
each firing `count` times, with call and fire counters for tests. Each server subclasses it to
check and fill in its own protocol's error fields (AWS error names, gRPC status codes)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any, ClassVar


class FaultTable:
    """Thread-safe: shared by every request thread or task of a server."""

    fields: ClassVar[frozenset[str]]  # accepted rule fields besides "count" and "delay"
    kind: ClassVar[str] = "operation"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: dict[str, dict[str, Any]] = {}
        self._fired: Counter[str] = Counter()
        self._calls: Counter[str] = Counter()

    def _rule(self, name: str, rule: dict[str, Any]) -> dict[str, Any]:
        """The protocol's own fields of a stored rule; raise ValueError if they are wrong."""
        raise NotImplementedError

    def configure(self, spec: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(spec, dict):
            raise ValueError(f"fault spec must be a JSON object keyed by {self.kind}")
        with self._lock:
            for name, rule in spec.items():
                if rule is None:
                    self._rules.pop(name, None)
                    continue
                if not isinstance(rule, dict):
                    raise ValueError(f"rule for {name!r} must be an object")
                unknown = set(rule) - self.fields - {"count", "delay"}
                if unknown:
                    raise ValueError(f"unknown rule fields for {name!r}: {sorted(unknown)}")
                count = int(rule.get("count", 1))
                if count <= 0:
                    self._rules.pop(name, None)
                    continue
                self._rules[name] = {
                    **self._rule(name, rule),
                    "count": count,
                    "delay": float(rule.get("delay", 0.0)),
                }
        return self.snapshot()

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._fired.clear()
            self._calls.clear()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "rules": {k: dict(v) for k, v in self._rules.items()},
                "fired": dict(self._fired),
                "calls": dict(self._calls),
            }

    def _consume(self, keys: Iterable[str], counted_as: str) -> dict[str, Any] | None:
        """Count a call as `counted_as`; consume the first rule found under `keys`."""
        with self._lock:
            self._calls[counted_as] += 1
            for key in keys:
                rule = self._rules.get(key)
                if rule is None:
                    continue
                rule["count"] -= 1
                if rule["count"] <= 0:
                    del self._rules[key]
                self._fired[counted_as] += 1
                return dict(rule)
        return None
