"""The console's pages and actions. Each handler names the API route it stands for: the viewer
must be allowed on that route by api/permissions.py (api.auth.permitted, buckets included), and
the action runs through that route's own function (api/routes/*), never a copy of its rules."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlmodel import col, select

from api.auth import api_key_identity, api_key_identity_by_id, authenticated, client_ip, may, permitted
from api.console import session as sessions
from api.console.session import ConsoleSession
from api.routes import admin, operations, withdrawals
from api.routes.operations import OperatorAction
from core.errors import CsrfFailed, CustodyError, Unauthorized, ValidationFailed
from core.identity import Identity
from core.money import to_decimal_string
from db import audit
from models.access import WithdrawalAction
from models.db import Withdrawal, WithdrawalEvent
from models.payloads import FINAL_STATUSES, WithdrawalStatus
from models.policy import AddressBookEntry, PolicyDecision

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/console", include_in_schema=False)

# The API route each console page or action stands for: its permission rule is the console's.
APPROVE = "POST /v1/withdrawals/{withdrawal_id}/approve"
LIST = "GET /v1/withdrawals"
DETAIL = "GET /v1/withdrawals/{withdrawal_id}"
STATS = "GET /v1/admin/stats"
ACTIONS: dict[str, str] = {
    "pause": "POST /v1/withdrawals/{withdrawal_id}/pause",
    "resume": "POST /v1/withdrawals/{withdrawal_id}/resume",
    "cancel": "POST /v1/withdrawals/{withdrawal_id}/cancel",
    "retry": "POST /v1/withdrawals/{withdrawal_id}/retry",
    "approve": APPROVE,
}
FILTERS = ("status", "chain", "asset", "owner", "wallet")
LIST_LIMIT = 100


class SignInNeeded(Exception):
    """No session (or one whose key no longer holds): the page answers with the sign-in form."""


class Viewer:
    """The signed-in caller of one console request, allowed on its route."""

    def __init__(self, identity: Identity, session: ConsoleSession) -> None:
        self.identity = identity
        self.session = session

    def may(self, route: str) -> bool:
        return may(self.identity, route)


async def viewer(request: Request, route: str, *, write: bool = False) -> Viewer:
    state = request.app.state.custody
    current = await sessions.current(state, request)
    if current is None:
        raise SignInNeeded()
    if write and not sessions.csrf_matches(current, (await _form(request)).get("csrf", "")):
        raise CsrfFailed("this form's CSRF token is missing or wrong: reload the page and try again")
    ip = client_ip(request)
    try:
        identity = await authenticated(
            state, f"console {route}", ip, write, lambda: api_key_identity_by_id(state, current.key_id, ip)
        )
    except Unauthorized as e:
        await sessions.end(state, current, Response())
        raise SignInNeeded() from e
    return Viewer(await permitted(state, identity, route, write), current)


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form (the console's only kind), parsed with the standard library."""
    if "form" not in request.scope.setdefault("state", {}):
        body = await request.body()
        request.scope["state"]["form"] = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return request.scope["state"]["form"]


def render(request: Request, template: str, viewer: Viewer | None, status_code: int = 200, **context: Any) -> HTMLResponse:
    nav = {}
    if viewer is not None:
        nav = {"approvals": viewer.may(APPROVE), "withdrawals": viewer.may(LIST), "dashboard": viewer.may(STATS)}
    return templates.TemplateResponse(
        request, template, {"viewer": viewer, "nav": nav, "csrf": viewer.session.csrf if viewer else "", **context},
        status_code=status_code,
    )


def console_page(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """A refusal is a page with the error's stable code and status; no session: to sign in."""

    @functools.wraps(handler)
    async def page(request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(request, *args, **kwargs)
        except SignInNeeded:
            if request.method == "GET":
                return RedirectResponse("/console/sign-in", status_code=303)
            return render(request, "error.html", None, status_code=401, code="UNAUTHORIZED", message="sign in first")
        except CustodyError as e:
            return render(request, "error.html", None, status_code=e.http_status, code=e.code, message=e.message)

    return page


@router.get("/sign-in")
async def sign_in_form(request: Request) -> Response:
    carrier = Response()
    token = sessions.sign_in_token(request.app.state.custody.settings, carrier)
    return render_with_cookies(request, carrier, "sign_in.html", sign_in_csrf=token)


def render_with_cookies(request: Request, carrier: Response, template: str, status_code: int = 200, **context: Any) -> Response:
    """`template` rendered, keeping the cookies already set on `carrier`."""
    response = render(request, template, None, status_code=status_code, **context)
    for name, value in carrier.raw_headers:
        if name == b"set-cookie":
            response.raw_headers.append((name, value))
    return response


@router.post("/sign-in")
@console_page
async def sign_in(request: Request) -> Response:
    """An API key in, a session out: the same identities and keys as the API (OIDC: not yet)."""
    state = request.app.state.custody
    form = await _form(request)
    if not sessions.sign_in_token_matches(state.settings, request, form.get("csrf", "")):
        raise CsrfFailed("the sign-in form expired or did not come from this console: reload it")
    ip = client_ip(request)
    token = form.get("api_key", "").strip()
    try:
        if not token or len(token) > 8192:
            raise Unauthorized("enter an API key")
        identity = await authenticated(state, "console sign-in", ip, True, lambda: api_key_identity(state, token, ip))
    except Unauthorized as e:
        carrier = Response()
        fresh = sessions.sign_in_token(state.settings, carrier)
        return render_with_cookies(request, carrier, "sign_in.html", status_code=401, sign_in_csrf=fresh, error=e.message)
    assert identity.subject is not None
    response = RedirectResponse("/console", status_code=303)
    await sessions.start(state, response, identity.subject, identity.id)
    async with state.sessions() as db, db.begin():
        await audit.append(
            db, actor=identity.id, action="console.signed_in", object_type="api_key", object_id=identity.subject,
            details={"via": identity.via, "ip": ip or "unknown"},
        )
    return response


@router.post("/sign-out")
@console_page
async def sign_out(request: Request) -> Response:
    state = request.app.state.custody
    current = await sessions.current(state, request)
    if current is None:
        raise SignInNeeded()
    if not sessions.csrf_matches(current, (await _form(request)).get("csrf", "")):
        raise CsrfFailed("this form's CSRF token is missing or wrong")
    response = RedirectResponse("/console/sign-in", status_code=303)
    await sessions.end(state, current, response)
    return response


@router.get("")
@console_page
async def home(request: Request) -> Response:
    """Where a viewer starts: the dashboard, else the approvals queue, else the withdrawals."""
    me = await viewer(request, "GET /v1/users/me")
    for route, url in ((STATS, "/console/dashboard"), (APPROVE, "/console/approvals"), (LIST, "/console/withdrawals")):
        if me.may(route):
            return RedirectResponse(url, status_code=303)
    return render(request, "error.html", me, status_code=403, code="FORBIDDEN", message="your roles give no console page")


@router.get("/approvals")
@console_page
async def approvals(request: Request) -> Response:
    """Withdrawals awaiting approval, with the rule that held each and its quorum so far."""
    me = await viewer(request, APPROVE)
    state = request.app.state.custody
    rows = []
    async with state.sessions() as db:
        held = (
            await db.exec(
                select(Withdrawal).where(Withdrawal.status == WithdrawalStatus.AWAITING_APPROVAL.value).order_by(col(Withdrawal.created_at))
            )
        ).all()
        for w in held:
            public = await withdrawals._public(db, state, w, detail=False)
            decision = (
                await db.exec(select(PolicyDecision).where(PolicyDecision.withdrawal_id == w.id, PolicyDecision.stage == "DECIDE"))
            ).first()
            approved = (
                await db.exec(
                    select(WithdrawalAction.actor).where(
                        WithdrawalAction.withdrawal_id == w.id, WithdrawalAction.action == "APPROVE", WithdrawalAction.state == "ACCEPTED"
                    ).order_by(col(WithdrawalAction.id))
                )
            ).all()
            book = (
                await db.exec(
                    select(AddressBookEntry.label).where(
                        AddressBookEntry.owner == w.owner, AddressBookEntry.chain == w.chain,
                        AddressBookEntry.address == w.destination, AddressBookEntry.removed_at == None,  # noqa: E711
                    )
                )
            ).first()
            quorum = (decision.quorum or {}) if decision is not None else {}
            rows.append({
                "w": public, "decision": decision, "quorum": quorum, "approvals": list(dict.fromkeys(approved)),
                "book_label": book, "own": me.identity.id in (w.owner, w.requested_by),
            })
    return render(request, "approvals.html", me, rows=rows)


@router.get("/withdrawals")
@console_page
async def withdrawal_list(request: Request) -> Response:
    me = await viewer(request, LIST)
    state = request.app.state.custody
    chosen = {k: request.query_params.get(k, "").strip() for k in FILTERS}
    query = select(Withdrawal)
    if not me.identity.any_owner:
        query = query.where(Withdrawal.owner == me.identity.id)
    if chosen["status"]:
        if chosen["status"] not in WithdrawalStatus.__members__:
            raise ValidationFailed(f"unknown status {chosen['status']!r}", field="status")
        query = query.where(Withdrawal.status == chosen["status"])
    if chosen["chain"]:
        query = query.where(Withdrawal.chain == chosen["chain"].lower())
    if chosen["asset"]:
        query = query.where(Withdrawal.asset == chosen["asset"].upper())
    if chosen["owner"]:
        query = query.where(Withdrawal.owner == chosen["owner"])
    if chosen["wallet"]:
        query = query.where(Withdrawal.wallet_id == chosen["wallet"])
    async with state.sessions() as db:
        found = (await db.exec(query.order_by(col(Withdrawal.created_at).desc()).limit(LIST_LIMIT))).all()
        items = [await withdrawals._public(db, state, w, detail=False) for w in found]
    return render(
        request, "withdrawals.html", me, items=items, chosen=chosen, statuses=[s.value for s in WithdrawalStatus],
        chains=sorted(state.settings.chains), limit=LIST_LIMIT,
    )


async def _detail_context(request: Request, me: Viewer, withdrawal_id: str) -> dict[str, Any]:
    state = request.app.state.custody
    async with state.sessions() as db:
        w = await withdrawals.get_withdrawal(withdrawal_id, me.identity, state, db)
    status = WithdrawalStatus(w.status)
    offered = {
        "pause": not status.is_final and not w.paused,
        "resume": not status.is_final and w.paused,
        "cancel": not status.is_final,
        "retry": status == WithdrawalStatus.FAILED,
        "approve": status == WithdrawalStatus.AWAITING_APPROVAL and me.identity.id != w.owner,
    }
    actions = [name for name, shown in offered.items() if shown and me.may(ACTIONS[name])]
    return {"w": w, "final": status.is_final, "actions": actions, "fee": _fee(state, w.chain, w.fee_paid_base_units)}


def _fee(state, chain: str, base_units: str | None) -> str | None:  # type: ignore[no-untyped-def]
    """The fee paid in the chain's native asset, as a decimal (base units if the chain is gone)."""
    if base_units is None:
        return None
    config = state.settings.chains.get(chain)
    if config is None:
        return f"{base_units} (native base units)"
    return f"{to_decimal_string(int(base_units), config.native_decimals)} {config.native_symbol}"


@router.get("/withdrawals/{withdrawal_id}")
@console_page
async def withdrawal_detail(request: Request, withdrawal_id: str) -> Response:
    me = await viewer(request, DETAIL)
    return render(request, "withdrawal.html", me, **await _detail_context(request, me, withdrawal_id))


@router.get("/withdrawals/{withdrawal_id}/status")
@console_page
async def withdrawal_status(request: Request, withdrawal_id: str) -> Response:
    """The status part of the detail page alone: what its script fetches every few seconds."""
    me = await viewer(request, DETAIL)
    return render(request, "_status.html", me, **await _detail_context(request, me, withdrawal_id))


@router.post("/withdrawals/{withdrawal_id}/{action}")
@console_page
async def withdrawal_action(request: Request, withdrawal_id: str, action: str) -> Response:
    """Pause, resume, cancel, retry or approve, through the API route's own function."""
    if action not in ACTIONS:
        raise ValidationFailed(f"unknown action {action!r}", field="action", known=sorted(ACTIONS))
    me = await viewer(request, ACTIONS[action], write=True)
    state = request.app.state.custody
    form = await _form(request)
    body = OperatorAction(reason=form.get("reason", "")[:500])
    async with state.sessions() as db:
        if action == "retry":
            result = await operations.retry(withdrawal_id, me.identity, state, db, Response())
        else:
            handler = {"pause": operations.pause, "resume": operations.resume, "cancel": operations.cancel, "approve": operations.approve}[action]
            result = await handler(withdrawal_id, body, me.identity, state, db)
    back = form.get("back", "")
    target = "/console/approvals" if back == "approvals" else f"/console/withdrawals/{result.id}"
    return RedirectResponse(target, status_code=303)


@router.get("/dashboard")
@console_page
async def dashboard(request: Request) -> Response:
    me = await viewer(request, STATS)
    state = request.app.state.custody
    days = request.query_params.get("days", "30")
    if not days.isdigit() or not 1 <= int(days) <= 366:
        raise ValidationFailed("days is a whole number from 1 to 366", field="days")
    async with state.sessions() as db:
        numbers = await admin.stats(me.identity.id, state, db, int(days))
    return render(request, "dashboard.html", me, stats=numbers, days=int(days))


STUCK_AFTER_SECONDS = 600


@router.get("/stuck")
@console_page
async def stuck(request: Request) -> Response:
    """Withdrawals not final whose last step began longer ago than a threshold (operators, as
    the statistics: GET /v1/admin/stats's grant), the oldest first."""
    me = await viewer(request, STATS)
    state = request.app.state.custody
    seconds = request.query_params.get("seconds", str(STUCK_AFTER_SECONDS))
    if not seconds.isdigit() or int(seconds) > 30 * 86400:
        raise ValidationFailed("seconds is a whole number up to 30 days", field="seconds")
    last_step = sa.func.max(WithdrawalEvent.at).label("since")
    steps = (
        select(WithdrawalEvent.withdrawal_id, last_step).group_by(col(WithdrawalEvent.withdrawal_id)).subquery()
    )
    query = (
        select(Withdrawal, steps.c.since)
        .join(steps, steps.c.withdrawal_id == Withdrawal.id)
        .where(col(Withdrawal.status).not_in([s.value for s in FINAL_STATUSES]))
        .where(steps.c.since < sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, int(seconds)))
        .order_by(steps.c.since)
        .limit(LIST_LIMIT)
    )
    async with state.sessions() as db:
        found = (await db.exec(query)).all()
        rows = [{"w": await withdrawals._public(db, state, w, detail=False), "since": since} for w, since in found]
    return render(request, "stuck.html", me, rows=rows, seconds=int(seconds))


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")


def query_string(chosen: dict[str, str]) -> str:
    return urlencode({k: v for k, v in chosen.items() if v})


templates.env.globals["query_string"] = query_string
