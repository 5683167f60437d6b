"""Horizon's HTTP API (and friendbot, and /_devnet test controls) over a :class:`StellarLedger`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from stellar_sdk import StrKey

from . import horizon as hz
from .codec import STROOPS_PER_XLM, b64, toid
from .ledger import PAYMENT_OP_TYPES, StellarLedger, SubmitOutcome, TxRecord
from .results import TxCode, inner_tx_result, tx_result

log = logging.getLogger("devnet.stellar")

HAL = "application/hal+json; charset=utf-8"
PROBLEM = "application/problem+json; charset=utf-8"
DEFAULT_FRIENDBOT_XLM = 10_000


def hal(body: dict, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=HAL)


def problem(body: dict) -> JSONResponse:
    return JSONResponse(body, status_code=body["status"], media_type=PROBLEM)


@dataclass
class _FailurePlan:
    count: int = 0
    status: int = 504
    apply: bool = True


class DevnetNode:
    """Closes ledgers (on a timer or on demand) and turns submissions into Horizon responses."""

    def __init__(
        self,
        ledger: StellarLedger,
        *,
        close_interval_ms: int = 1000,
        submission_timeout: float = 30.0,
        friendbot_xlm: int = DEFAULT_FRIENDBOT_XLM,
    ) -> None:
        self.ledger = ledger
        self.close_interval_ms = close_interval_ms
        self.submission_timeout = submission_timeout
        self.friendbot_stroops = friendbot_xlm * STROOPS_PER_XLM
        self.failures = _FailurePlan()
        self._closed = asyncio.Event()
        self._closer_task: asyncio.Task | None = None

    @property
    def manual(self) -> bool:
        return self.close_interval_ms <= 0

    # ------------------------------------------------------------ ledger closing

    async def start(self) -> None:
        self._closed = asyncio.Event()
        if not self.manual:
            self._closer_task = asyncio.create_task(self._closer(), name="stellar-ledger-closer")

    async def stop(self) -> None:
        if self._closer_task is not None:
            self._closer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._closer_task
            self._closer_task = None

    async def _closer(self) -> None:
        interval = self.close_interval_ms / 1000
        next_at = time.monotonic() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            if next_at < time.monotonic():  # fell behind (e.g. a suspended process)
                next_at = time.monotonic() + interval
            try:
                self.close_ledgers(1)
            except Exception:  # keep closing ledgers even if one close hits a bug
                log.exception("ledger close failed")

    def close_ledgers(self, count: int = 1) -> list[int]:
        closed = [self.ledger.close_ledger().seq for _ in range(count)]
        event, self._closed = self._closed, asyncio.Event()
        event.set()
        return closed

    async def wait_closed(self, seq: int, timeout: float | None = None) -> bool:
        """Wait until ledger ``seq`` is closed; in manual mode close it now."""
        if self.ledger.last_closed_seq >= seq:
            return True
        if self.manual:
            self.close_ledgers(1)
            return True
        deadline = time.monotonic() + (self.submission_timeout if timeout is None else timeout)
        while self.ledger.last_closed_seq < seq:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            event = self._closed
            # poll too, in case a thread closed ledgers through the StellarLedger directly
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, 0.25))
        return True

    # ------------------------------------------------------------ submission

    def take_failure(self) -> _FailurePlan | None:
        if self.failures.count <= 0:
            return None
        self.failures.count -= 1
        return _FailurePlan(1, self.failures.status, self.failures.apply)

    async def submit_sync(self, envelope: str, base: str) -> JSONResponse:
        failure = self.take_failure()
        if failure is not None and not failure.apply:
            return problem(hz.server_problem(failure.status))
        outcome = self.ledger.submit(envelope)
        response = await self._sync_response(outcome, base)
        if failure is not None:
            return problem(hz.server_problem(failure.status))
        return response

    async def _sync_response(self, outcome: SubmitOutcome, base: str) -> JSONResponse:
        if outcome.status == "malformed":
            return problem(hz.transaction_malformed(outcome.envelope_xdr))
        if outcome.status == "rejected":
            return problem(hz.transaction_failed(outcome.envelope_xdr, outcome.result))
        if outcome.status == "try_again_later":
            return await self._try_again_later_response(outcome, base)
        rec = outcome.record
        assert rec is not None
        if rec.closed_at is None and not await self.wait_closed(rec.ledger):
            return problem(hz.timeout())
        if rec.successful:
            return hal(hz.transaction_json(rec, base))
        return problem(hz.transaction_failed(rec.parsed.envelope_xdr, rec.result))

    async def _try_again_later_response(self, outcome: SubmitOutcome, base: str) -> JSONResponse:
        """Horizon treats core's TRY_AGAIN_LATER like PENDING and waits for the hash to show up
        in a closed ledger. It was not applied, so unless the same envelope lands through
        another submission meanwhile, that ends in a 504 timeout (at once in manual mode)."""
        assert outcome.hash is not None
        if not self.manual:
            deadline = time.monotonic() + self.submission_timeout
            while (rec := self.ledger.transaction(outcome.hash)) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                event = self._closed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(remaining, 0.25))
            else:
                if rec.successful:
                    return hal(hz.transaction_json(rec, base))
                return problem(hz.transaction_failed(rec.parsed.envelope_xdr, rec.result))
        return problem(hz.timeout())

    async def submit_async(self, envelope: str) -> JSONResponse:
        failure = self.take_failure()
        if failure is not None and not failure.apply:
            return problem(hz.server_problem(failure.status))
        outcome = self.ledger.submit(envelope)
        if failure is not None:
            return problem(hz.server_problem(failure.status))
        if outcome.status == "malformed":
            return problem(hz.transaction_malformed(outcome.envelope_xdr))
        if outcome.status == "rejected":
            return hal(
                {
                    "tx_status": "ERROR",
                    "hash": outcome.hash,
                    "error_result_xdr": outcome.result.to_xdr(),
                },
                400,
            )
        if outcome.status == "try_again_later":
            return hal({"tx_status": "TRY_AGAIN_LATER", "hash": outcome.hash}, 503)
        rec = outcome.record
        if outcome.status == "duplicate":
            if rec.closed_at is None:
                return hal({"tx_status": "DUPLICATE", "hash": outcome.hash}, 409)
            # stellar-core no longer knows it; the sequence number is consumed
            return hal(
                {
                    "tx_status": "ERROR",
                    "hash": outcome.hash,
                    "error_result_xdr": _bad_seq_result(rec, outcome.hash),
                },
                400,
            )
        return hal({"tx_status": "PENDING", "hash": outcome.hash}, 201)


def _bad_seq_result(rec: TxRecord, submitted_hash: str | None) -> str:
    p = rec.parsed
    if p.fee_bump is not None and submitted_hash == p.hash_hex:
        inner = inner_tx_result(TxCode.txBAD_SEQ)
        return tx_result(TxCode.txFEE_BUMP_INNER_FAILED, 0, inner=(p.tx_hash, inner)).to_xdr()
    return tx_result(TxCode.txBAD_SEQ).to_xdr()


# ------------------------------------------------------------------ request helpers


def _node(request: Request) -> DevnetNode:
    return request.app.state.node


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def _read_tx(request: Request) -> str | None:
    body = await request.body()
    ctype = request.headers.get("content-type", "")
    if "json" in ctype:
        try:
            value = json.loads(body or b"{}").get("tx")
        except (ValueError, AttributeError):
            value = None
    else:
        value = parse_qs(body.decode("utf-8", errors="replace")).get("tx", [None])[0]
    if value is None:
        value = request.query_params.get("tx")
    return value or None


async def _json_body(request: Request) -> dict:
    body = await request.body()
    if not body:
        return dict(request.query_params)
    try:
        data = json.loads(body)
    except ValueError:
        data = {k: v[0] for k, v in parse_qs(body.decode()).items()}
    return data if isinstance(data, dict) else {}


class _BadParam(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _page_params(request: Request) -> tuple[str | None, int, str]:
    q = request.query_params
    order = q.get("order") or "asc"
    if order not in ("asc", "desc"):
        raise _BadParam("order", "order must be asc or desc")
    try:
        limit = int(q.get("limit") or 10)
    except ValueError as e:
        raise _BadParam("limit", "limit must be an integer") from e
    if not 1 <= limit <= 200:
        raise _BadParam("limit", "limit must be between 1 and 200")
    cursor = q.get("cursor") or None
    if cursor is not None and cursor != "now" and not cursor.isdigit():
        raise _BadParam("cursor", "cursor must be a number or now")
    return cursor, limit, order


def _paginate(items: list[tuple[int, object]], cursor: str | None, limit: int, order: str) -> list:
    """``items`` are (paging token, value) in ascending order."""
    if order == "desc":
        seq = reversed(items)
        if cursor and cursor != "now":
            c = int(cursor)
            seq = (i for i in seq if i[0] < c)
    else:
        seq = iter(items)
        if cursor == "now":
            return []
        if cursor:
            c = int(cursor)
            seq = (i for i in seq if i[0] > c)
    out = []
    for _pt, value in seq:
        out.append(value)
        if len(out) >= limit:
            break
    return out


def _include_failed(request: Request) -> bool:
    return request.query_params.get("include_failed", "false").lower() == "true"


def _valid_account(account_id: str) -> bool:
    return StrKey.is_valid_ed25519_public_key(account_id)


# ------------------------------------------------------------------ handlers


async def root(request: Request) -> Response:
    return hal(hz.root_json(_node(request).ledger, _base(request)))


async def get_account(request: Request) -> Response:
    account_id = request.path_params["account_id"]
    if not _valid_account(account_id):
        return problem(hz.bad_request("account_id", "Account ID must start with `G` and contain 56 alphanum characters"))
    ledger = _node(request).ledger
    acc = ledger.account(account_id)
    if acc is None:
        return problem(hz.not_found())
    return hal(hz.account_json(ledger, acc, _base(request)))


async def get_account_data(request: Request) -> Response:
    account_id = request.path_params["account_id"]
    key = request.path_params["key"]
    _, data = _node(request).ledger.account_entries(account_id)
    for d in data:
        if d.name == key:
            return hal({"value": b64(d.value)})
    return problem(hz.not_found())


def _tx_list(request: Request, records: list[TxRecord], path: str) -> Response:
    cursor, limit, order = _page_params(request)
    include_failed = _include_failed(request)
    items = [(r.paging_token, r) for r in records if include_failed or r.successful]
    chosen = _paginate(items, cursor, limit, order)
    base = _base(request)
    records_json = [hz.transaction_json(r, base) for r in chosen]
    return hal(hz.page(base, path, records_json, cursor=cursor, limit=limit, order=order))


def _op_list(
    request: Request,
    records: list[TxRecord],
    path: str,
    *,
    account: str | None = None,
    payments_only: bool = False,
    include_failed: bool = False,
) -> Response:
    cursor, limit, order = _page_params(request)
    include_failed = include_failed or _include_failed(request)
    items: list[tuple[int, tuple[TxRecord, int]]] = []
    for r in records:
        if not (include_failed or r.successful):
            continue
        for i, op in enumerate(r.parsed.tx.operations):
            if payments_only and op.body.type not in PAYMENT_OP_TYPES:
                continue
            if account is not None and account not in r.op_participants[i]:
                continue
            items.append((toid(r.ledger, r.order, i + 1), (r, i)))
    chosen = _paginate(items, cursor, limit, order)
    base = _base(request)
    records_json = [hz.operation_json(r, i, base) for r, i in chosen]
    return hal(hz.page(base, path, records_json, cursor=cursor, limit=limit, order=order))


async def account_transactions(request: Request) -> Response:
    account_id = request.path_params["account_id"]
    records = [r for r in _node(request).ledger.history() if account_id in r.participants]
    return _tx_list(request, records, request.url.path)


async def account_operations(request: Request) -> Response:
    account_id = request.path_params["account_id"]
    return _op_list(request, _node(request).ledger.history(), request.url.path, account=account_id)


async def account_payments(request: Request) -> Response:
    account_id = request.path_params["account_id"]
    return _op_list(request, _node(request).ledger.history(), request.url.path, account=account_id, payments_only=True)


async def all_transactions(request: Request) -> Response:
    return _tx_list(request, _node(request).ledger.history(), request.url.path)


async def all_operations(request: Request) -> Response:
    return _op_list(request, _node(request).ledger.history(), request.url.path)


async def all_payments(request: Request) -> Response:
    return _op_list(request, _node(request).ledger.history(), request.url.path, payments_only=True)


async def get_transaction(request: Request) -> Response:
    tx_hash = request.path_params["tx_hash"]
    rec = _node(request).ledger.transaction(tx_hash)
    if rec is None:
        return problem(hz.not_found())
    return hal(hz.transaction_json(rec, _base(request), requested_hash=tx_hash))


async def transaction_operations(request: Request) -> Response:
    rec = _node(request).ledger.transaction(request.path_params["tx_hash"])
    if rec is None:
        return problem(hz.not_found())
    return _op_list(request, [rec], request.url.path, include_failed=True)


async def transaction_payments(request: Request) -> Response:
    rec = _node(request).ledger.transaction(request.path_params["tx_hash"])
    if rec is None:
        return problem(hz.not_found())
    return _op_list(request, [rec], request.url.path, payments_only=True, include_failed=True)


async def post_transaction(request: Request) -> Response:
    envelope = await _read_tx(request)
    if envelope is None:
        return problem(hz.bad_request("tx", "Transaction must be provided as the form field `tx`"))
    return await _node(request).submit_sync(envelope, _base(request))


async def post_transaction_async(request: Request) -> Response:
    envelope = await _read_tx(request)
    if envelope is None:
        return problem(hz.bad_request("tx", "Transaction must be provided as the form field `tx`"))
    return await _node(request).submit_async(envelope)


async def list_ledgers(request: Request) -> Response:
    cursor, limit, order = _page_params(request)
    ledgers = _node(request).ledger.ledgers()
    chosen = _paginate([(toid(lr.seq), lr) for lr in ledgers], cursor, limit, order)
    base = _base(request)
    return hal(hz.page(base, "/ledgers", [hz.ledger_json(lr, base) for lr in chosen], cursor=cursor, limit=limit, order=order))


def _ledger_or_none(request: Request):
    try:
        seq = int(request.path_params["sequence"])
    except ValueError:
        return None
    return _node(request).ledger.ledger(seq)


async def get_ledger(request: Request) -> Response:
    lr = _ledger_or_none(request)
    if lr is None:
        return problem(hz.not_found())
    return hal(hz.ledger_json(lr, _base(request)))


async def ledger_transactions(request: Request) -> Response:
    lr = _ledger_or_none(request)
    if lr is None:
        return problem(hz.not_found())
    return _tx_list(request, lr.txs, request.url.path)


async def ledger_payments(request: Request) -> Response:
    lr = _ledger_or_none(request)
    if lr is None:
        return problem(hz.not_found())
    return _op_list(request, lr.txs, request.url.path, payments_only=True)


async def fee_stats(request: Request) -> Response:
    return hal(hz.fee_stats_json(_node(request).ledger))


async def friendbot(request: Request) -> Response:
    node = _node(request)
    addr = request.query_params.get("addr")
    if addr is None and request.method == "POST":
        addr = (await _json_body(request)).get("addr")
    if not addr or not _valid_account(addr):
        return problem(hz.bad_request("addr", "address must be a valid Stellar account id (G...)"))
    if node.ledger.account_exists_open(addr):
        return problem(hz.bad_request("", "account already funded to starting balance"))
    envelope = node.ledger.friendbot_envelope(addr, node.friendbot_stroops)
    # exempt from the one-tx-per-account queue limit: real friendbot signs from channel accounts
    outcome = node.ledger.submit(envelope, queue_limit=False)
    return await node._sync_response(outcome, _base(request))


# ------------------------------------------------------------------ /_devnet controls


async def devnet_status(request: Request) -> Response:
    node = _node(request)
    ledger = node.ledger
    latest = ledger.latest_ledger()
    return JSONResponse(
        {
            "network_passphrase": ledger.network_passphrase,
            "latest_ledger": latest.seq,
            "latest_ledger_closed_at": latest.close_time,
            "open_ledger": ledger.open_seq,
            "pending_transactions": [r.hash_hex for r in ledger.pending()],
            "now": ledger.now(),
            "base_fee": ledger.base_fee,
            "base_reserve": ledger.base_reserve,
            "close_interval_ms": node.close_interval_ms,
            "root_account": ledger.root_keypair.public_key,
            "pending_failures": node.failures.count,
            "rejections": ledger.rejection_counts(),
        }
    )


async def devnet_close_ledgers(request: Request) -> Response:
    data = await _json_body(request)
    count = int(data.get("count", 1))
    if not 1 <= count <= 10_000:
        return problem(hz.bad_request("count", "count must be between 1 and 10000"))
    node = _node(request)
    closed = node.close_ledgers(count)
    return JSONResponse({"closed": closed, "latest_ledger": node.ledger.last_closed_seq})


async def devnet_set_time(request: Request) -> Response:
    data = await _json_body(request)
    ledger = _node(request).ledger
    try:
        ledger.set_time(int(data["unix"]))
    except (KeyError, ValueError, TypeError) as e:
        return problem(hz.bad_request("unix", str(e)))
    return JSONResponse({"now": ledger.now()})


async def devnet_advance_time(request: Request) -> Response:
    data = await _json_body(request)
    ledger = _node(request).ledger
    try:
        ledger.advance_time(float(data["seconds"]))
    except (KeyError, ValueError, TypeError) as e:
        return problem(hz.bad_request("seconds", str(e)))
    return JSONResponse({"now": ledger.now()})


async def devnet_fail_next_submissions(request: Request) -> Response:
    data = await _json_body(request)
    node = _node(request)
    try:
        count = int(data.get("count", 1))
        status = int(data.get("status", 504))
    except (TypeError, ValueError) as e:
        return problem(hz.bad_request("count", str(e)))
    if count < 0 or not 500 <= status <= 599:
        return problem(hz.bad_request("status", "count must be >= 0 and status a 5xx code"))
    apply = data.get("apply", True)
    if isinstance(apply, str):
        apply = apply.lower() not in ("false", "0", "no")
    node.failures = _FailurePlan(count, status, bool(apply))
    return JSONResponse({"pending_failures": count, "status": status, "apply": bool(apply)})


async def devnet_set_base_fee(request: Request) -> Response:
    data = await _json_body(request)
    ledger = _node(request).ledger
    try:
        ledger.set_base_fee(int(data["stroops"]))
    except (KeyError, ValueError, TypeError) as e:
        return problem(hz.bad_request("stroops", str(e)))
    return JSONResponse({"base_fee": ledger.base_fee})


# ------------------------------------------------------------------ app


async def _http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    if status == 404:
        return problem(hz.not_found())
    if status == 405:
        return problem(hz.problem("method_not_allowed", "Method Not Allowed", 405, "This endpoint does not support the requested method."))
    return problem(hz.problem("bad_request", "Bad Request", status, str(getattr(exc, "detail", exc))))


async def _bad_param(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _BadParam)
    return problem(hz.bad_request(exc.field, exc.reason))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return problem(hz.server_problem(500))


def create_app(
    ledger: StellarLedger | None = None,
    *,
    network_passphrase: str | None = None,
    close_interval_ms: int = 1000,
    base_fee: int = 100,
    base_reserve: int = 5_000_000,
    submission_timeout: float = 30.0,
    friendbot_xlm: int = DEFAULT_FRIENDBOT_XLM,
) -> Starlette:
    """The ASGI app. ``close_interval_ms=0`` means ledgers close only on demand (a synchronous
    submission closes its ledger at once; /_devnet/close_ledgers closes more)."""
    if ledger is None:
        kwargs = {"base_fee": base_fee, "base_reserve": base_reserve}
        if network_passphrase is not None:
            kwargs["network_passphrase"] = network_passphrase  # type: ignore[assignment]
        ledger = StellarLedger(**kwargs)  # type: ignore[arg-type]
    node = DevnetNode(
        ledger,
        close_interval_ms=close_interval_ms,
        submission_timeout=submission_timeout,
        friendbot_xlm=friendbot_xlm,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await node.start()
        try:
            yield
        finally:
            await node.stop()
            ledger.close()  # a saved ledger: keeps what the open ledger applied, closes its store

    routes = [
        Route("/", root),
        Route("/accounts/{account_id}", get_account),
        Route("/accounts/{account_id}/data/{key}", get_account_data),
        Route("/accounts/{account_id}/transactions", account_transactions),
        Route("/accounts/{account_id}/operations", account_operations),
        Route("/accounts/{account_id}/payments", account_payments),
        Route("/transactions", all_transactions, methods=["GET"]),
        Route("/transactions", post_transaction, methods=["POST"]),
        Route("/transactions_async", post_transaction_async, methods=["POST"]),
        Route("/transactions/{tx_hash}", get_transaction),
        Route("/transactions/{tx_hash}/operations", transaction_operations),
        Route("/transactions/{tx_hash}/payments", transaction_payments),
        Route("/operations", all_operations),
        Route("/payments", all_payments),
        Route("/ledgers", list_ledgers),
        Route("/ledgers/{sequence}", get_ledger),
        Route("/ledgers/{sequence}/transactions", ledger_transactions),
        Route("/ledgers/{sequence}/payments", ledger_payments),
        Route("/fee_stats", fee_stats),
        Route("/friendbot", friendbot, methods=["GET", "POST"]),
        Route("/friendbot/", friendbot, methods=["GET", "POST"]),
        Route("/_devnet/status", devnet_status),
        Route("/_devnet/close_ledgers", devnet_close_ledgers, methods=["POST"]),
        Route("/_devnet/set_time", devnet_set_time, methods=["POST"]),
        Route("/_devnet/advance_time", devnet_advance_time, methods=["POST"]),
        Route("/_devnet/fail_next_submissions", devnet_fail_next_submissions, methods=["POST"]),
        Route("/_devnet/set_base_fee", devnet_set_base_fee, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: _http_error,
            _BadParam: _bad_param,
            Exception: _server_error,
        },
    )
    app.state.node = node
    return app
