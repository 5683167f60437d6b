"""A wire-level fault proxy: an HTTP reverse proxy in front of one real node (anvil's JSON-RPC,
the Solana devnet's JSON-RPC, the Stellar devnet's Horizon, or any HTTP API) that injects faults
by rule, so tests and the chaos harness break the wire, never the clients.

Actions (``action`` of a rule):
    hang           hold the request unanswered; after ``seconds`` (default: until the client gives
                   up) reset the connection. The client sees its own timeout.
    error          answer an HTTP error, ``status`` (default 503; 429 for a rate limit), ``body``.
    reset          close the connection without answering (TCP RST: "connection reset by peer").
    drop_response  forward to the node and read its whole answer, then reset the connection: the
                   node accepted the request (a transaction, say) but the client never hears so.
    delay          forward after ``seconds`` of added latency.
    respond        answer without the node: HTTP ``status`` (default 200) and ``body`` (text or
                   JSON), or for JSON-RPC calls ``rpc_error`` ({"code", "message", "data"?}) or
                   ``rpc_result``, given to each matching call (its id kept; inside a batch the
                   other calls still go to the node). For a node's own wording of an error.

Matching (all given fields must match; none given: every request):
    rpc_method     a JSON-RPC method name, or a list of them; also found inside batch requests
    http           "POST /transactions": HTTP method and path prefix ("/accounts": any method)
Firing: ``probability`` (default 1) for each matching request, ``count`` = for the next N
matching requests that fire (default: until removed). The first rule that matches and fires
decides; rules are kept in the order they were added.

In-process (pytest)::

    with FaultProxy("http://127.0.0.1:8545") as proxy:          # or: async with
        proxy.add(action="reset", rpc_method="eth_sendRawTransaction", count=1)
        ... point the client at proxy.url ...
        assert proxy.snapshot()["injected"]["reset"] == 1

As a process::

    python -m devnet.faultproxy --target http://127.0.0.1:8545 --port 9545
    curl -XPOST localhost:9545/_faults -d '{"action": "error", "status": 502, "probability": 0.2}'
    curl localhost:9545/_faults            # rules and counters
    curl -XDELETE localhost:9545/_faults   # remove every rule (?counters=1: reset counters too)
    curl -XDELETE localhost:9545/_faults/<rule name>

Counters (``snapshot()``, GET /_faults): ``requests`` proxied, ``forwarded`` to the node,
``injected`` per action, ``fired`` per rule name, ``seen`` per JSON-RPC method and per
"METHOD /first-path-segment" (what reached the proxy, faulted or not), ``upstream_errors``
(the node itself unreachable: answered 502), ``connections``: client TCP connections that
carried those requests (a client that keeps its connections alive opens few).

The proxy runs on its own event loop in a background thread, so blocking test code and the
clients under test cannot stall it; rule changes are thread-safe.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import random
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

log = logging.getLogger(__name__)

ACTIONS = frozenset({"hang", "error", "reset", "drop_response", "delay", "respond"})
CONTROL_PATH = "/_faults"
# Headers that describe one hop, not the message: never copied across the proxy.
_HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailers",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
    )
)
_POLL_SECONDS = 0.05
_UNSET: Any = object()


@dataclass
class FaultRule:
    """One rule; see the module docstring for the fields."""

    action: str
    rpc_method: tuple[str, ...] = ()
    http_method: str | None = None
    http_path: str | None = None
    probability: float = 1.0
    count: int | None = None
    seconds: float | None = None
    status: int | None = None
    body: Any = None
    rpc_error: dict[str, Any] | None = None
    rpc_result: Any = _UNSET
    name: str = ""
    matched: int = 0
    fired: int = 0

    FIELDS = frozenset({"action", "rpc_method", "http", "probability", "count", "seconds", "status", "body", "rpc_error", "rpc_result", "name"})

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> FaultRule:
        """A rule from its JSON form; ValueError says what is wrong."""
        if not isinstance(spec, dict):
            raise ValueError("a rule is a JSON object")
        unknown = set(spec) - cls.FIELDS
        if unknown:
            raise ValueError(f"unknown rule fields: {sorted(unknown)}")
        action = spec.get("action")
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {sorted(ACTIONS)}, got {action!r}")
        methods = spec.get("rpc_method") or ()
        if isinstance(methods, str):
            methods = (methods,)
        if not isinstance(methods, (list, tuple)) or not all(isinstance(m, str) and m for m in methods):
            raise ValueError("rpc_method is a method name or a list of them")
        http_method = http_path = None
        if spec.get("http") is not None:
            parts = str(spec["http"]).split()
            if len(parts) == 1 and parts[0].startswith("/"):
                http_path = parts[0]
            elif len(parts) == 2 and parts[1].startswith("/"):
                http_method, http_path = parts[0].upper(), parts[1]
            else:
                raise ValueError('http is "METHOD /path-prefix" or "/path-prefix"')
        probability = float(spec.get("probability", 1.0))
        if not 0 < probability <= 1:
            raise ValueError("probability must be in (0, 1]")
        count = spec.get("count")
        if count is not None and (not isinstance(count, int) or count <= 0):
            raise ValueError("count must be a positive integer (or absent: until removed)")
        seconds = spec.get("seconds")
        if seconds is not None:
            seconds = float(seconds)
            if seconds < 0:
                raise ValueError("seconds must not be negative")
        if action == "delay" and seconds is None:
            raise ValueError("a delay needs seconds")
        status = spec.get("status")
        if status is not None and (not isinstance(status, int) or not 100 <= status <= 599):
            raise ValueError("status must be an HTTP status code")
        if action == "error" and status is not None and status < 400:
            raise ValueError("an error's status is 4xx or 5xx")
        rpc_error = spec.get("rpc_error")
        if rpc_error is not None and (not isinstance(rpc_error, dict) or "message" not in rpc_error):
            raise ValueError('rpc_error is a JSON-RPC error object {"code", "message", "data"?}')
        rpc_result = spec["rpc_result"] if "rpc_result" in spec else _UNSET
        if action == "respond" and rpc_error is None and rpc_result is _UNSET and status is None and spec.get("body") is None:
            raise ValueError("respond needs rpc_error, rpc_result, or a status and/or body")
        if rpc_error is not None and rpc_result is not _UNSET:
            raise ValueError("give rpc_error or rpc_result, not both")
        return cls(
            action=action,
            rpc_method=tuple(methods),
            http_method=http_method,
            http_path=http_path,
            probability=probability,
            count=count,
            seconds=seconds,
            status=status,
            body=spec.get("body"),
            rpc_error=rpc_error,
            rpc_result=rpc_result,
            name=str(spec.get("name") or ""),
        )

    @property
    def rpc_reply(self) -> bool:
        return self.action == "respond" and (self.rpc_error is not None or self.rpc_result is not _UNSET)

    def matches(self, method: str, path: str, rpc_methods: list[str]) -> bool:
        if self.rpc_method and not set(self.rpc_method) & set(rpc_methods):
            return False
        if self.http_method is not None and self.http_method != method:
            return False
        return self.http_path is None or path.startswith(self.http_path)

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"name": self.name, "action": self.action, "probability": self.probability}
        if self.rpc_method:
            spec["rpc_method"] = list(self.rpc_method)
        if self.http_path is not None:
            spec["http"] = f"{self.http_method} {self.http_path}" if self.http_method else self.http_path
        for key in ("count", "seconds", "status", "body", "rpc_error"):
            if getattr(self, key) is not None:
                spec[key] = getattr(self, key)
        if self.rpc_result is not _UNSET:
            spec["rpc_result"] = self.rpc_result
        spec.update(matched=self.matched, fired=self.fired)
        return spec


@dataclass
class _Request:
    """What the proxy read of one request (the body once, for matching and forwarding)."""

    method: str
    path: str
    body: bytes
    calls: list[dict[str, Any]] = field(default_factory=list)  # JSON-RPC calls, batch or single
    batch: bool = False

    @property
    def rpc_methods(self) -> list[str]:
        return [str(c.get("method")) for c in self.calls if isinstance(c.get("method"), str)]


def _parse(method: str, path: str, body: bytes) -> _Request:
    request = _Request(method, path, body)
    stripped = body.lstrip()[:1]
    if method != "POST" or stripped not in (b"{", b"["):
        return request
    try:
        payload = json.loads(body)
    except ValueError:
        return request
    if isinstance(payload, list):
        request.calls, request.batch = [c for c in payload if isinstance(c, dict)], True
    elif isinstance(payload, dict) and "method" in payload:
        request.calls = [payload]
    return request


class FaultProxy:
    """A reverse proxy to `target` with a rule table; ``start()`` binds (port 0 = a free port)."""

    def __init__(self, target: str, host: str = "127.0.0.1", port: int = 0, *, seed: int | None = None) -> None:
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("target must be an http(s) URL")
        self.target = target.rstrip("/")
        self._target_origin = f"{parts.scheme}://{parts.netloc}"
        self._target_path = parts.path.rstrip("/")
        self.host = host
        self.port = port
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._names = itertools.count(1)
        self._counters: dict[str, Counter[str]] = {}
        self._totals: Counter[str] = Counter()
        self._connections: dict[int, asyncio.BaseTransport] = {}  # open ones, by id (held: no id reuse)
        self._reset_counters()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._stopping = threading.Event()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._session: aiohttp.ClientSession | None = None

    # --- rules (thread-safe; also behind the /_faults routes) ----------------------------------
    def add(self, spec: dict[str, Any] | None = None, /, **fields: Any) -> str:
        """Add one rule (a dict, or keyword fields); returns its name (given, or generated)."""
        return self.add_all([{**(spec or {}), **fields}])[0]

    def add_all(self, specs: list[dict[str, Any]]) -> list[str]:
        """Add several rules, all or none (ValueError names the first bad one)."""
        rules = [FaultRule.from_spec(spec) for spec in specs]
        with self._lock:
            taken = {r.name for r in self._rules}
            for rule in rules:
                if not rule.name:
                    rule.name = f"{rule.action}-{next(self._names)}"
                if rule.name in taken:
                    raise ValueError(f"a rule named {rule.name!r} exists already")
                taken.add(rule.name)
            self._rules.extend(rules)
        return [r.name for r in rules]

    def remove(self, name: str) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.name != name]
            return len(self._rules) != before

    def clear(self, *, counters: bool = False) -> None:
        """Remove every rule (the proxy then forwards everything); optionally zero the counters."""
        with self._lock:
            self._rules.clear()
            if counters:
                self._reset_counters()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "target": urlsplit(self.target).netloc.rpartition("@")[2],  # never the path or credentials
                "rules": [r.to_spec() for r in self._rules],
                **{k: int(v) for k, v in self._totals.items()},
                **{k: dict(v) for k, v in self._counters.items()},
            }

    def seen(self, key: str) -> int:
        """How many requests (or batch calls) for a JSON-RPC method / "METHOD /segment" arrived."""
        with self._lock:
            return self._counters["seen"][key]

    def injected(self, action: str | None = None) -> int:
        with self._lock:
            counts = self._counters["injected"]
            return sum(counts.values()) if action is None else counts[action]

    def _reset_counters(self) -> None:
        self._counters = {"injected": Counter(), "fired": Counter(), "seen": Counter()}
        self._totals = Counter({"requests": 0, "forwarded": 0, "upstream_errors": 0, "connections": 0})
        self._connections = {}

    def _choose(self, request: _Request, connection: asyncio.BaseTransport | None) -> FaultRule | None:
        """Count the request (and its connection, if new); the first rule that matches and fires
        (its count consumed)."""
        with self._lock:
            self._totals["requests"] += 1
            if connection is not None and self._connections.get(id(connection)) is not connection:
                self._totals["connections"] += 1
                for key in [key for key, known in self._connections.items() if known.is_closing()]:
                    del self._connections[key]
                self._connections[id(connection)] = connection
            seen = self._counters["seen"]
            for rpc_method in request.rpc_methods:
                seen[rpc_method] += 1
            segment = "/" + request.path.lstrip("/").split("/", 1)[0]
            seen[f"{request.method} {segment}"] += 1
            for rule in self._rules:
                if not rule.matches(request.method, request.path, request.rpc_methods):
                    continue
                rule.matched += 1
                if rule.probability < 1 and self._random.random() >= rule.probability:
                    continue
                rule.fired += 1
                self._counters["fired"][rule.name] += 1
                self._counters["injected"][rule.action] += 1
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count == 0:
                        self._rules.remove(rule)
                return _copy(rule)
        return None

    # --- serving -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        return sock

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get(CONTROL_PATH, self._control_get)
        app.router.add_post(CONTROL_PATH, self._control_post)
        app.router.add_delete(CONTROL_PATH, self._control_delete)
        app.router.add_delete(CONTROL_PATH + "/{name}", self._control_delete_one)
        app.router.add_route("*", "/{tail:.*}", self._proxy)
        return app

    async def serve(self, sock: socket.socket | None = None) -> None:
        """Serve until stop() (or cancellation), on the running loop."""
        sock = sock or self._bind()
        self._loop = asyncio.get_running_loop()
        runner = web.AppRunner(self._app(), handler_cancellation=True, access_log=None, shutdown_timeout=1)
        await runner.setup()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        session = self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        try:
            await web.SockSite(runner, sock).start()
            self._started.set()
            while not self._stopping.is_set():
                await asyncio.sleep(_POLL_SECONDS)
        finally:
            await runner.cleanup()
            await session.close()

    def start(self, timeout: float = 10.0) -> FaultProxy:
        if self._thread is not None:
            raise RuntimeError("proxy already started")
        self._sock = self._bind()
        self._stopping.clear()

        def run() -> None:
            try:
                asyncio.run(self.serve(self._sock))
            except BaseException as e:  # surfaced by start()
                self._error = e

        self._thread = threading.Thread(target=run, name=f"faultproxy:{self.port}", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout) or self._error is not None:
            self.stop()
            raise RuntimeError(f"fault proxy did not start: {self._error!r}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving: afterwards the port refuses connections (a dead endpoint)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
        self._thread = self._sock = None
        self._started.clear()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FaultProxy:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # --- the proxy route -----------------------------------------------------------------------
    async def _proxy(self, http: web.Request) -> web.StreamResponse:
        request = _parse(http.method, http.path, await http.read())
        rule = self._choose(request, http.transport)
        if rule is None:
            return await self._forward(http, request)
        if rule.action == "delay":
            await self._wait(http, rule.seconds or 0.0)
            return await self._forward(http, request)
        if rule.action == "hang":
            await self._wait(http, rule.seconds)
            return self._reset(http)
        if rule.action == "reset":
            return self._reset(http)
        if rule.action == "error":
            return self._answer(rule.status or 503, rule.body if rule.body is not None else {"error": "injected fault"})
        if rule.action == "drop_response":
            await self._forward(http, request)  # the node did the work; the client never hears of it
            return self._reset(http)
        if rule.rpc_reply and request.calls:
            return await self._rpc_reply(http, request, rule)
        return self._answer(rule.status or 200, rule.body if rule.body is not None else "")

    async def _wait(self, http: web.Request, seconds: float | None) -> None:
        """Hold the request for `seconds` (None: until the client leaves or the proxy stops)."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while not self._stopping.is_set() and (deadline is None or time.monotonic() < deadline):
            if http.transport is None or http.transport.is_closing():
                return
            await asyncio.sleep(_POLL_SECONDS if deadline is None else min(_POLL_SECONDS, max(deadline - time.monotonic(), 0)))

    @staticmethod
    def _reset(http: web.Request) -> web.StreamResponse:
        """Close the connection with a TCP RST and no answer."""
        transport = http.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            transport.abort()
        raise asyncio.CancelledError  # nothing is written: aiohttp drops the finished connection

    @staticmethod
    def _answer(status: int, body: Any) -> web.Response:
        if isinstance(body, (dict, list)):
            return web.json_response(body, status=status)
        return web.Response(status=status, text=str(body))

    def _upstream_url(self, http: web.Request) -> str:
        """The target's URL plus the request's path and query ("/" alone maps to the target's path)."""
        path = http.rel_url.raw_path
        if path == "/" and self._target_path:
            path = ""
        query = http.rel_url.raw_query_string
        return self._target_origin + self._target_path + path + (f"?{query}" if query else "")

    async def _send(self, http: web.Request, body: bytes, identity: bool = False) -> tuple[int, Any, bytes]:
        headers = {k: v for k, v in http.headers.items() if k.lower() not in _HOP_BY_HOP}
        if identity:
            headers["Accept-Encoding"] = "identity"
        assert self._session is not None
        async with self._session.request(http.method, self._upstream_url(http), headers=headers, data=body, allow_redirects=False) as response:
            payload = await response.read()
            with self._lock:
                self._totals["forwarded"] += 1
            return response.status, response.headers, payload

    async def _forward(self, http: web.Request, request: _Request) -> web.Response:
        try:
            status, headers, payload = await self._send(http, request.body)
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            with self._lock:
                self._totals["upstream_errors"] += 1
            return web.Response(status=502, text=f"fault proxy: upstream unreachable ({type(e).__name__})")
        kept = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
        return web.Response(status=status, body=payload, headers=kept)

    async def _rpc_reply(self, http: web.Request, request: _Request, rule: FaultRule) -> web.Response:
        """Answer the matching JSON-RPC calls with the rule's error/result; forward the others."""

        def hit(call: dict[str, Any]) -> bool:
            return not rule.rpc_method or call.get("method") in rule.rpc_method

        replies: dict[int, dict[str, Any]] = {}
        for index, call in enumerate(request.calls):
            if hit(call) and "id" in call:
                reply: dict[str, Any] = {"jsonrpc": "2.0", "id": call["id"]}
                reply.update({"error": rule.rpc_error} if rule.rpc_error is not None else {"result": rule.rpc_result})
                replies[index] = reply
        rest = [c for c in request.calls if not hit(c)]
        forwarded: dict[Any, dict[str, Any]] = {}
        if rest:
            try:
                status, _, payload = await self._send(http, json.dumps(rest).encode(), identity=True)
                answers = json.loads(payload) if status == 200 else []
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
                with self._lock:
                    self._totals["upstream_errors"] += 1
                return web.Response(status=502, text="fault proxy: upstream unreachable")
            for answer in answers if isinstance(answers, list) else [answers]:
                if isinstance(answer, dict):
                    forwarded[json.dumps(answer.get("id"))] = answer
        ordered = []
        for index, call in enumerate(request.calls):
            if index in replies:
                ordered.append(replies[index])
            elif json.dumps(call.get("id")) in forwarded:
                ordered.append(forwarded[json.dumps(call.get("id"))])
        if not request.batch:
            return web.json_response(ordered[0] if ordered else None, status=rule.status or 200)
        return web.json_response(ordered, status=rule.status or 200)

    # --- control routes ------------------------------------------------------------------------
    async def _control_get(self, http: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _control_post(self, http: web.Request) -> web.Response:
        try:
            payload = await http.json()
            names = self.add_all(payload if isinstance(payload, list) else [payload])
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response({"added": names, **self.snapshot()})

    async def _control_delete(self, http: web.Request) -> web.Response:
        self.clear(counters=http.query.get("counters") in ("1", "true", "yes"))
        return web.json_response(self.snapshot())

    async def _control_delete_one(self, http: web.Request) -> web.Response:
        if not self.remove(http.match_info["name"]):
            return web.json_response({"error": "no such rule"}, status=404)
        return web.json_response(self.snapshot())


def _copy(rule: FaultRule) -> FaultRule:
    """A detached copy, so a handler never reads a rule the control side is changing."""
    return FaultRule(**{f: getattr(rule, f) for f in rule.__dataclass_fields__})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devnet.faultproxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="the node's URL, e.g. http://127.0.0.1:8545")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=None, help="seed of the probability draws (reproducible runs)")
    parser.add_argument("--rules", default=None, help="JSON list of rules to start with")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    proxy = FaultProxy(args.target, args.host, args.port, seed=args.seed)
    for spec in json.loads(args.rules) if args.rules else []:
        proxy.add(spec)
    sock = proxy._bind()
    log.info("fault proxy on %s -> %s (control: %s%s)", proxy.url, proxy.snapshot()["target"], proxy.url, CONTROL_PATH)
    try:
        asyncio.run(proxy.serve(sock))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
