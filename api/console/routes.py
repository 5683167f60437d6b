"""The console's pages and actions. Each handler names the API route it stands for: the viewer
must be allowed on that route by api/permissions.py (api.auth.permitted, buckets included), and
the action runs through that route's own function (api/routes/*), never a copy of its rules."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlmodel import col, select

from api.auth import api_key_identity, api_key_identity_by_id, authenticated, client_ip, may, oidc_claims_identity, permitted
from api.console import oidc_sign_in
from api.console import session as sessions
from api.console.charts import dashboard_charts
from api.console.session import ConsoleSession
from api.deps import snapshot_session
from api.limits import INT64_MAX
from api.oidc import IdentityProviderUnavailable
from api.routes import address_book, admin, channels, operations, policy, pools, withdrawals
from api.routes import audit as audit_routes
from api.routes.operations import OperatorAction
from core.errors import CsrfFailed, CustodyError, Forbidden, NotAvailable, Unauthorized, ValidationFailed
from core.identity import Identity
from core.money import to_decimal_string
from db import audit
from models.access import WithdrawalAction
from models.db import Reservation, Wallet, Withdrawal, WithdrawalEvent
from models.payloads import FINAL_STATUSES, WithdrawalStatus
from models.policy import AddressBookEntry, PolicyDecision
from models.webhooks import WebhookDelivery

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/console", include_in_schema=False)

# The API route each console page or action stands for: its permission rule is the console's.
APPROVE = "POST /v1/withdrawals/{withdrawal_id}/approve"
LIST = "GET /v1/withdrawals"
DETAIL = "GET /v1/withdrawals/{withdrawal_id}"
STATS = "GET /v1/admin/stats"
RECONCILIATION = "GET /v1/admin/reconciliation/{chain}"
RECONCILE = "POST /v1/admin/reconciliation/{chain}/runs"
RECONCILE_WAIT_SECONDS = 20  # the page waits this long for the run's report, then shows it RUNNING
POOLS = "GET /v1/pools/{chain}"
CHANNELS = "GET /v1/channels/{chain}"
REBALANCE = "POST /v1/pools/{chain}/rebalance"
POLICY = "GET /v1/policy"
POLICY_VERSIONS = "GET /v1/policy/versions"
POLICY_VERSION = "GET /v1/policy/versions/{version}"
ADDRESS_BOOK = "GET /v1/address-book"
AUDIT = "GET /v1/audit"
AUDIT_VERIFY = "GET /v1/audit/verify"
AUDIT_FILTERS = ("object_id", "action", "actor", "before_id")
ACTIONS: dict[str, str] = {
    "pause": "POST /v1/withdrawals/{withdrawal_id}/pause",
    "resume": "POST /v1/withdrawals/{withdrawal_id}/resume",
    "cancel": "POST /v1/withdrawals/{withdrawal_id}/cancel",
    "retry": "POST /v1/withdrawals/{withdrawal_id}/retry",
    "approve": APPROVE,
    "reject": "POST /v1/withdrawals/{withdrawal_id}/reject",
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
    claims = current.oidc_claims
    try:
        if claims is not None:
            identity = await authenticated(state, f"console {route}", ip, write, lambda: oidc_claims_identity(state, claims, ip))
        else:
            identity = await authenticated(state, f"console {route}", ip, write, lambda: api_key_identity_by_id(state, current.key_id, ip))
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
        nav = {
            "approvals": viewer.may(APPROVE),
            "withdrawals": viewer.may(LIST),
            "dashboard": viewer.may(STATS),
            "wallets": viewer.may(POOLS),
            "policy": viewer.may(POLICY),
            "audit": viewer.may(AUDIT),
        }
    return templates.TemplateResponse(
        request,
        template,
        {"viewer": viewer, "nav": nav, "csrf": viewer.session.csrf if viewer else "", **context},
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
    context.setdefault("oidc_label", oidc_label(request.app.state.custody.settings))
    response = render(request, template, None, status_code=status_code, **context)
    for name, value in carrier.raw_headers:
        if name == b"set-cookie":
            response.raw_headers.append((name, value))
    return response


@router.post("/sign-in")
@console_page
async def sign_in(request: Request) -> Response:
    """An API key in, a session out: the same identities and keys as the API (OIDC: oidc_login)."""
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
            db,
            actor=identity.id,
            action="console.signed_in",
            object_type="api_key",
            object_id=identity.subject,
            details={"via": identity.via, "ip": ip or "unknown"},
        )
    return response


def _oidc_refused(request: Request, error: CustodyError) -> Response:
    """The sign-in page again, saying why, the OIDC flow ended (never a 5xx: the issuer's
    outage is not the console's)."""
    carrier = Response()
    carrier.delete_cookie(sessions.OIDC_FLOW_COOKIE, path=sessions.PATH)
    token = sessions.sign_in_token(request.app.state.custody.settings, carrier)
    status = 403 if isinstance(error, Forbidden) else 401
    return render_with_cookies(request, carrier, "sign_in.html", status_code=status, sign_in_csrf=token, error=error.message, error_code=error.code)


@router.get("/login/oidc")
@console_page
async def oidc_login(request: Request) -> Response:
    """ "Sign in with <issuer>": to the issuer's authorization endpoint (api/console/oidc_sign_in.py)."""
    response = RedirectResponse("/console/sign-in", status_code=302)
    try:
        response.headers["location"] = await oidc_sign_in.authorization_url(request, response)
    except IdentityProviderUnavailable as e:
        return _oidc_refused(request, e)
    return response


@router.get("/login/oidc/callback")
@console_page
async def oidc_callback(request: Request) -> Response:
    """The issuer's answer: the same console session the API-key form starts, or the sign-in page."""
    state = request.app.state.custody
    try:
        claims, identity = await oidc_sign_in.signed_in(request)
    except (Unauthorized, Forbidden, IdentityProviderUnavailable) as e:
        return _oidc_refused(request, e)
    # A page, not a redirect, carries the session cookie: SameSite=Strict cookies set in answer to
    # the issuer's cross-site redirect are sent on a navigation this page starts itself.
    response = HTMLResponse(
        '<!doctype html><meta http-equiv="refresh" content="0;url=/console"><title>Signed in</title><a href="/console">Continue to the console</a>'
    )
    await sessions.start(state, response, "", identity.id, oidc_claims=claims)
    async with state.sessions() as db, db.begin():
        await audit.append(
            db,
            actor=identity.id,
            action="console.signed_in",
            object_type="oidc_subject",
            object_id=str(claims["sub"]),
            details={"via": identity.via, "ip": client_ip(request) or "unknown"},
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
                select(Withdrawal)
                .where(Withdrawal.status == WithdrawalStatus.AWAITING_APPROVAL.value, col(Withdrawal.chain).in_(state.chains.names()))
                .order_by(col(Withdrawal.created_at))
            )
        ).all()
        for w in held:
            public = await withdrawals._public(db, state, w, detail=False)
            decision = (await db.exec(select(PolicyDecision).where(PolicyDecision.withdrawal_id == w.id, PolicyDecision.stage == "DECIDE"))).first()
            approved = (
                await db.exec(
                    select(WithdrawalAction.actor)
                    .where(WithdrawalAction.withdrawal_id == w.id, WithdrawalAction.action == "APPROVE", WithdrawalAction.state == "ACCEPTED")
                    .order_by(col(WithdrawalAction.id))
                )
            ).all()
            book = (
                await db.exec(
                    select(AddressBookEntry.label).where(
                        AddressBookEntry.owner == w.owner,
                        AddressBookEntry.chain == w.chain,
                        AddressBookEntry.address == w.destination,
                        AddressBookEntry.removed_at == None,  # noqa: E711
                    )
                )
            ).first()
            quorum = (decision.quorum or {}) if decision is not None else {}
            rows.append(
                {
                    "w": public,
                    "decision": decision,
                    "quorum": quorum,
                    "approvals": list(dict.fromkeys(approved)),
                    "book_label": book,
                    "own": me.identity.id in (w.owner, w.requested_by),
                }
            )
    return render(request, "approvals.html", me, rows=rows)


@router.get("/withdrawals")
@console_page
async def withdrawal_list(request: Request) -> Response:
    me = await viewer(request, LIST)
    state = request.app.state.custody
    chosen = {k: request.query_params.get(k, "").strip() for k in FILTERS}
    # Withdrawals of a chain no longer configured cannot be shown in units: left out of lists.
    query = select(Withdrawal).where(col(Withdrawal.chain).in_(state.chains.names()))
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
        request,
        "withdrawals.html",
        me,
        items=items,
        chosen=chosen,
        statuses=[s.value for s in WithdrawalStatus],
        chains=sorted(state.settings.chains),
        limit=LIST_LIMIT,
    )


async def _detail_context(request: Request, me: Viewer, withdrawal_id: str) -> dict[str, Any]:
    state = request.app.state.custody
    async with snapshot_session(state) as db:
        w = await withdrawals.get_withdrawal(withdrawal_id, me.identity, state, db)
    status = WithdrawalStatus(w.status)
    offered = {
        "pause": not status.is_final and not w.paused,
        "resume": not status.is_final and w.paused,
        "cancel": not status.is_final,
        "retry": status == WithdrawalStatus.FAILED,
        "approve": status == WithdrawalStatus.AWAITING_APPROVAL and me.identity.id != w.owner,
        "reject": status == WithdrawalStatus.AWAITING_APPROVAL and me.identity.id != w.owner,
    }
    actions = [name for name, shown in offered.items() if shown and me.may(ACTIONS[name])]
    chain = state.settings.chains.get(w.chain)
    tx_links = {a.tx_hash: chain.explorer_tx_link(a.tx_hash) for a in w.attempts if chain is not None and a.tx_hash}
    return {"w": w, "final": status.is_final, "actions": actions, "fee": _fee(state, w.chain, w.fee_paid_base_units), "tx_links": tx_links}


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
    """Pause, resume, cancel, retry, approve or reject, through the API route's own function."""
    if action not in ACTIONS:
        raise ValidationFailed(f"unknown action {action!r}", field="action", known=sorted(ACTIONS))
    me = await viewer(request, ACTIONS[action], write=True)
    state = request.app.state.custody
    form = await _form(request)
    body = OperatorAction(reason=form.get("reason", "")[:500])
    async with state.sessions() as db:
        if action == "retry":
            result = await operations.retry(withdrawal_id, me.identity, state, db, Response())
        elif action == "reject":
            if not body.reason.strip():
                raise ValidationFailed("a rejection needs a reason", field="reason")
            result = await operations.reject(withdrawal_id, operations.RejectAction(reason=body.reason), me.identity, state, db)
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
    return render(request, "dashboard.html", me, stats=numbers, days=int(days), charts=dashboard_charts(numbers))


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
    wallet = request.query_params.get("wallet", "").strip()
    last_step = sa.func.max(WithdrawalEvent.at).label("since")
    steps = select(WithdrawalEvent.withdrawal_id, last_step).group_by(col(WithdrawalEvent.withdrawal_id)).subquery()
    query = (
        select(Withdrawal, steps.c.since)
        .join(steps, steps.c.withdrawal_id == Withdrawal.id)
        .where(col(Withdrawal.status).not_in([s.value for s in FINAL_STATUSES]))
        .where(steps.c.since < sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, int(seconds)))
        .where(col(Withdrawal.chain).in_(state.chains.names()))  # shown in units: configured chains only
        .order_by(steps.c.since)
        .limit(LIST_LIMIT)
    )
    if wallet:  # the oldest LIST_LIMIT of a busy system may not include the one wallet looked into
        query = query.where(Withdrawal.wallet_id == wallet)
    async with state.sessions() as db:
        found = (await db.exec(query)).all()
        rows = [{"w": await withdrawals._public(db, state, w, detail=False), "since": since} for w, since in found]
        alerts = await _open_alerts(db)
        drift = await _drift(me, state, db)
        failing = await _failing_deliveries(db)
    return render(request, "stuck.html", me, rows=rows, seconds=int(seconds), wallet=wallet, alerts=alerts, drift=drift, failing=failing)


async def _open_alerts(db) -> list[tuple[WithdrawalEvent, Withdrawal]]:  # type: ignore[no-untyped-def]
    """Alerts (activities/alerts.py: ALERT events, e.g. STUCK_AT_FEE_CAP, NONCE_GAP) on withdrawals
    not yet final: the newest first."""
    query = (
        select(WithdrawalEvent, Withdrawal)
        .join(Withdrawal, col(Withdrawal.id) == col(WithdrawalEvent.withdrawal_id))
        .where(WithdrawalEvent.status == "ALERT", col(Withdrawal.status).not_in([s.value for s in FINAL_STATUSES]))
        .order_by(col(WithdrawalEvent.at).desc())
        .limit(LIST_LIMIT)
    )
    return list((await db.exec(query)).all())


async def _latest_reports(me: Viewer, state, db) -> list[Any]:  # type: ignore[no-untyped-def]
    """Each configured chain's latest reconciliation report, read through GET
    /v1/admin/reconciliation/{chain}'s own function (none when the viewer may not read reports)."""
    if not me.may(RECONCILIATION):
        return []
    reports = []
    for chain in sorted(state.settings.chains):
        try:
            reports.append(await admin.latest_reconciliation(chain, me.identity.id, state, db, None))
        except NotAvailable:
            continue
    return reports


async def _drift(me: Viewer, state, db) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """The latest reports with their drifting rows."""
    return [{"report": r, "drifting": [row for row in r.rows if row.status == "DRIFT"]} for r in await _latest_reports(me, state, db)]


async def _failing_deliveries(db) -> list[WebhookDelivery]:  # type: ignore[no-untyped-def]
    """Webhook deliveries that gave up (FAILED) or whose last attempt failed and are still retried."""
    query = (
        select(WebhookDelivery)
        .where(sa.or_(WebhookDelivery.state == "FAILED", sa.and_(WebhookDelivery.state == "PENDING", col(WebhookDelivery.attempts) > 0)))
        .order_by(col(WebhookDelivery.created_at).desc())
        .limit(LIST_LIMIT)
    )
    return list((await db.exec(query)).all())


@router.get("/wallets")
@console_page
async def wallets_and_pools(request: Request) -> Response:
    """Operators: what each wallet holds for withdrawals in flight, each key pool's tiers against
    their targets (GET /v1/pools/{chain}'s own function), each chain's Stellar channels (GET
    /v1/channels/{chain}'s), and a button that runs POST /v1/pools/{chain}/rebalance's."""
    me = await viewer(request, POOLS)
    state = request.app.state.custody
    async with state.sessions() as db:
        holds = await _holds(state, db)
        reports = {r.chain: r for r in await _latest_reports(me, state, db)}
        pool_views = [
            {"pool": pool, "targets": _pool_targets(pool.settings)}
            for pool in [await pools.show_pool(chain, me.identity.id, state, db) for chain in sorted(state.settings.pools)]
        ]
        channel_sets = []
        if me.may(CHANNELS):
            for chain, config in sorted(state.settings.chains.items()):
                if getattr(config, "channels", None) is not None:
                    channel_sets.append(await channels.show_channels(chain, me.identity.id, state, db))
    return render(
        request,
        "wallets.html",
        me,
        holds=holds,
        pools=pool_views,
        channel_sets=channel_sets,
        may_rebalance=me.may(REBALANCE),
        started=request.query_params.get("rebalance", ""),
        # On-chain balances per wallet come from reconciliation (operators read users' wallets only
        # there: api/permissions.py), one report per chain, each with the block/ledger it read.
        balances=[{"chain": chain, "report": reports.get(chain)} for chain in sorted(state.settings.chains)] if me.may(RECONCILIATION) else [],
        may_reconcile=me.may(RECONCILE),
        reconciled=request.query_params.get("reconciled", ""),
    )


@router.post("/reconciliation/{chain}/runs")
@console_page
async def reconcile_chain(request: Request, chain: str) -> Response:
    """Read every wallet's balance on chain now, through POST /v1/admin/reconciliation/{chain}/runs's
    own function; back to the wallets page, which shows the new report (or RUNNING when it takes longer)."""
    me = await viewer(request, RECONCILE, write=True)
    state = request.app.state.custody
    async with state.sessions() as db:
        run = await admin.run_reconciliation(chain, me.identity.id, state, db, Response(), RECONCILE_WAIT_SECONDS)
    query = urlencode({"reconciled": f"{run.workflow_id} {run.state}"})
    return RedirectResponse(f"/console/wallets?{query}#balances-{chain.lower()}", status_code=303)


async def _holds(state, db) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Per wallet and asset: what withdrawals in flight hold (HELD reservations; their fees in the
    chain's native asset), as decimals, the largest count first."""
    rows = (
        await db.exec(select(Reservation, Wallet).join(Wallet, col(Wallet.id) == col(Reservation.wallet_id)).where(Reservation.state == "HELD"))
    ).all()
    held: dict[tuple[str, str], dict[str, Any]] = {}
    for r, wallet in rows:
        config = state.settings.chains.get(wallet.chain)
        native = config.native_symbol if config is not None else "native"
        for asset, amount in ((r.asset, r.amount), (native, r.fee_amount)):
            entry = held.setdefault(
                (wallet.id, asset),
                {"wallet": wallet, "asset": asset, "base_units": 0, "withdrawals": set()},
            )
            entry["base_units"] += amount
            entry["withdrawals"].add(r.withdrawal_id)
    shown = []
    for entry in held.values():
        try:
            amount = to_decimal_string(entry["base_units"], state.chains.get(entry["wallet"].chain).asset(entry["asset"]).decimals)
        except CustodyError:  # a chain or asset no longer configured
            amount = f"{entry['base_units']} base units"
        shown.append({**entry, "amount": amount, "withdrawals": len(entry["withdrawals"])})
    return sorted(shown, key=lambda e: (-e["withdrawals"], e["wallet"].id, e["asset"]))


def _pool_targets(settings: dict[str, Any]) -> dict[str, str]:
    """What the rebalance keeps each tier at (core.settings.PoolSettings), in words."""
    return {
        "hodl": f"cold funds; moves above {settings['hodl_auto_approve_up_to']} need an operator's approval",
        "bank": f"{settings['bank_count']} keys at {settings['bank_target_balance']} each",
        "explorer": f"at least {settings['min_available_explorers']} available at {settings['explorer_target_balance']} each",
    }


@router.post("/pools/{chain}/rebalance")
@console_page
async def rebalance_pool(request: Request, chain: str) -> Response:
    """Rebalance now, through POST /v1/pools/{chain}/rebalance's own function."""
    me = await viewer(request, REBALANCE, write=True)
    started = await pools.rebalance(chain, me.identity.id, request.app.state.custody)
    return RedirectResponse(
        f"/console/wallets?{urlencode({'rebalance': started.workflow_id or started.schedule_id or ''})}#pool-{chain.lower()}", status_code=303
    )


@router.get("/policy")
@console_page
async def policy_page(request: Request) -> Response:
    """The policy's rules (the current version, or `?version=`), its versions, and the address
    book with each entry's cooling period, through the /v1/policy and /v1/address-book routes' own
    functions."""
    me = await viewer(request, POLICY)
    state = request.app.state.custody
    asked = request.query_params.get("version", "").strip()
    owner = request.query_params.get("owner", "").strip() or None
    if asked and (not asked.isdigit() or int(asked) > 2**31 - 1):
        raise ValidationFailed("version is a whole number", field="version")
    async with state.sessions() as db:
        current = await policy.current_policy(me.identity, db)
        shown = current
        if asked and me.may(POLICY_VERSION):
            shown = await policy.get_version(int(asked), me.identity, db)
        versions = (await policy.list_versions(me.identity, db, 50, None)).items if me.may(POLICY_VERSIONS) else []
        entries = None
        if me.may(ADDRESS_BOOK):
            # Whose entries: as GET /v1/address-book's own grants say (anyone's for operators and
            # approvers, one's own for a USER), not as the policy's grant that let the viewer in.
            reader = await permitted(state, me.identity, ADDRESS_BOOK, False)
            entries = (await address_book.list_entries(reader, db, owner, None, False)).items
    return render(
        request,
        "policy.html",
        me,
        current=current,
        shown=shown,
        versions=versions,
        entries=entries,
        owner=owner or "",
    )


@router.get("/audit")
@console_page
async def audit_page(request: Request) -> Response:
    """The audit log, newest first, filtered by object, action or actor (GET /v1/audit's own
    function), with the whole chain's verification (GET /v1/audit/verify's)."""
    me = await viewer(request, AUDIT)
    chosen = {k: request.query_params.get(k, "").strip() for k in AUDIT_FILTERS}
    if chosen["before_id"] and not (chosen["before_id"].isdigit() and int(chosen["before_id"]) <= INT64_MAX):
        raise ValidationFailed("before_id is a whole number", field="before_id")
    async with request.app.state.custody.sessions() as db:
        page = await audit_routes.list_entries(
            me.identity.id,
            db,
            chosen["object_id"] or None,
            chosen["action"] or None,
            chosen["actor"] or None,
            int(chosen["before_id"]) if chosen["before_id"] else None,
            LIST_LIMIT,
        )
        verified = await audit_routes.verify(me.identity.id, db) if me.may(AUDIT_VERIFY) else None
    older = {**chosen, "before_id": str(page.next_before_id)} if page.next_before_id else None
    return render(request, "audit.html", me, page=page, chosen=chosen, verified=verified, older=older)


def oidc_label(settings: Any) -> str | None:
    """The name on the "Sign in with ..." button; None: OIDC sign-in is not configured."""
    oidc = settings.oidc
    if oidc is None or oidc.client_id is None:
        return None
    return oidc.display_name or urlsplit(oidc.issuer).hostname or oidc.issuer


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")


def query_string(chosen: dict[str, str]) -> str:
    return urlencode({k: v for k, v in chosen.items() if v})


templates.env.globals["query_string"] = query_string
