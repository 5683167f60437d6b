"""The policy over HTTP: admins read and change it (each change a new version, audited),
operators read it; both dry-run a hypothetical withdrawal against it (`custody policy test`).

A change names the version it was based on (`base_version`): if another admin published since,
it is refused with 409 POLICY_VERSION_CONFLICT instead of silently undoing their change.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from activities.policy import PolicyJudge, PolicySettings
from api.deps import CallerDep, SessionDep, StateDep
from api.limits import INT32_MAX
from core.errors import CustodyError, InvalidPolicy, PolicyNotFound, WalletNotFound
from core.money import to_base_units
from core.policy import PolicyDocument, Rule, RuleIn
from db import policy as store
from models.db import Wallet, Withdrawal
from models.policy import PolicyVersion

router = APIRouter(prefix="/v1/policy", tags=["policy"])


class PolicyPublic(BaseModel):
    version: int
    author: str
    summary: str
    created_at: datetime | None
    document: PolicyDocument


class PolicyVersionSummary(BaseModel):
    version: int
    author: str
    summary: str
    created_at: datetime | None


class PolicyVersionList(BaseModel):
    items: list[PolicyVersionSummary]


class _Change(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_version: int | None = Field(default=None, ge=0, description="refuse (409) if the policy is no longer at this version")
    summary: str = Field(default="", max_length=500, description="why: kept with the version and in the audit log")


class PolicyPut(_Change):
    document: PolicyDocument


class RuleCreate(_Change):
    rule: RuleIn
    position: int | None = Field(default=None, ge=0, le=500, description="0 = first (matched before all others); default: last")


class RuleUpdate(_Change):
    rule: RuleIn
    position: int | None = Field(default=None, ge=0, le=500, description="move it there; default: where it is")


class PolicyTestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wallet_id: str = Field(min_length=1, max_length=100)
    to: str = Field(min_length=1, max_length=200)
    asset: str = Field(min_length=1, max_length=64)
    amount: str = Field(min_length=1, max_length=100, examples=["1.5"])
    initiator: str | None = Field(default=None, max_length=200, description="who asks (default: the wallet's owner)")
    version: int | None = Field(default=None, ge=0, description="judge by this version (default: the current one)")


class TraceStep(BaseModel):
    rule_id: str
    name: str
    matched: bool
    why: str


class PolicyTestResult(BaseModel):
    version: int
    outcome: str
    error_code: str | None
    rule_id: str
    rule_name: str
    reason: str
    quorum: dict[str, Any] | None
    details: dict[str, str]
    trace: list[TraceStep]
    withdrawal: dict[str, Any] = Field(description="what the engine knew: initiator and roles, pool tier, destination's address-book status")


def _public(row: PolicyVersion) -> PolicyPublic:
    return PolicyPublic(
        version=row.version,
        author=row.author,
        summary=row.summary,
        created_at=row.created_at,
        document=PolicyDocument.model_validate(row.document),
    )


def _checked(state: StateDep, document: PolicyDocument | dict) -> PolicyDocument:
    """A whole document, valid on its own and against the configured chains and assets."""
    try:
        checked = document if isinstance(document, PolicyDocument) else PolicyDocument.model_validate(document)
    except ValidationError as e:
        raise InvalidPolicy("the policy would not be valid", errors=[err["msg"] for err in e.errors()]) from e
    for rule in checked.rules:
        chains = rule.match.chains or state.chains.names()
        for chain in rule.match.chains:
            if chain not in state.chains.names():
                raise InvalidPolicy(f"rule {rule.id}: no chain {chain!r} is configured", rule_id=rule.id)
        for asset in rule.match.assets:
            if not any(_has_asset(state, chain, asset) for chain in chains):
                raise InvalidPolicy(f"rule {rule.id}: asset {asset!r} is configured on none of its chains", rule_id=rule.id)
    return checked


def _has_asset(state: StateDep, chain: str, asset: str) -> bool:
    try:
        state.chains.get(chain).asset(asset)
    except CustodyError:
        return False
    return True


async def _publish(
    state: StateDep,
    session: SessionDep,
    caller: CallerDep,
    document: PolicyDocument | dict,
    change: _Change,
    summary: str,
    **details: str,
) -> PolicyPublic:
    checked = _checked(state, document)
    row = await store.publish(
        session,
        checked,
        author=caller.id,
        summary=change.summary or summary,
        base_version=change.base_version,
        details=details,
    )
    await session.commit()
    return _public(row)


@router.get("", response_model=PolicyPublic)
async def current_policy(_: CallerDep, session: SessionDep) -> PolicyPublic:
    version, _doc = await store.current(session)
    return _public(await store.version(session, version))


@router.put("", response_model=PolicyPublic)
async def put_policy(body: PolicyPut, caller: CallerDep, state: StateDep, session: SessionDep) -> PolicyPublic:
    """Replace the whole document (rules in order, groups, allowlist-only sources, address-book
    settings, default action): a new version."""
    return await _publish(state, session, caller, body.document, body, "policy replaced")


@router.get("/versions", response_model=PolicyVersionList)
async def list_versions(
    _: CallerDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
) -> PolicyVersionList:
    rows = await store.versions(session, limit=limit, before=before)
    return PolicyVersionList(items=[PolicyVersionSummary.model_validate(r, from_attributes=True) for r in rows])


@router.get("/versions/{version}", response_model=PolicyPublic)
async def get_version(version: Annotated[int, Path(ge=0, le=2**31 - 1)], _: CallerDep, session: SessionDep) -> PolicyPublic:
    return _public(await store.version(session, version))


@router.post("/rules", response_model=PolicyPublic, status_code=status.HTTP_201_CREATED)
async def add_rule(body: RuleCreate, caller: CallerDep, state: StateDep, session: SessionDep) -> PolicyPublic:
    """Insert a rule (last by default; rules are matched in order, the first match wins)."""
    _, document = await store.current(session)
    rule = Rule(id=f"r-{uuid.uuid4().hex[:8]}", **body.rule.model_dump())
    rules = list(document.rules)
    rules.insert(len(rules) if body.position is None else body.position, rule)
    changed = document.model_dump() | {"rules": [r.model_dump() for r in rules]}
    return await _publish(state, session, caller, changed, body, f"rule {rule.id} added", rule_id=rule.id)


@router.put("/rules/{rule_id}", response_model=PolicyPublic)
async def update_rule(rule_id: str, body: RuleUpdate, caller: CallerDep, state: StateDep, session: SessionDep) -> PolicyPublic:
    _, document = await store.current(session)
    rules = list(document.rules)
    at = next((i for i, r in enumerate(rules) if r.id == rule_id), None)
    if at is None:
        raise PolicyNotFound(f"no rule {rule_id} in the current policy", rule_id=rule_id)
    del rules[at]
    rules.insert(at if body.position is None else body.position, Rule(id=rule_id, **body.rule.model_dump()))
    changed = document.model_dump() | {"rules": [r.model_dump() for r in rules]}
    return await _publish(state, session, caller, changed, body, f"rule {rule_id} changed", rule_id=rule_id)


@router.delete("/rules/{rule_id}", response_model=PolicyPublic)
async def remove_rule(
    rule_id: str,
    caller: CallerDep,
    state: StateDep,
    session: SessionDep,
    base_version: Annotated[int | None, Query(ge=0, le=INT32_MAX)] = None,
) -> PolicyPublic:
    _, document = await store.current(session)
    if document.rule(rule_id) is None:
        raise PolicyNotFound(f"no rule {rule_id} in the current policy", rule_id=rule_id)
    changed = document.model_dump() | {"rules": [r.model_dump() for r in document.rules if r.id != rule_id]}
    return await _publish(state, session, caller, changed, _Change(base_version=base_version), f"rule {rule_id} removed", rule_id=rule_id)


@router.post("/test", response_model=PolicyTestResult)
async def test_policy(body: PolicyTestRequest, _: CallerDep, state: StateDep, session: SessionDep) -> PolicyTestResult:
    """Dry run: which rule would match this withdrawal now and why (every rule tried, in order),
    and what it would decide, limits and remaining amounts included. Nothing is recorded."""
    wallet = await session.get(Wallet, body.wallet_id)
    if wallet is None or wallet.address is None:
        raise WalletNotFound("no such wallet", wallet_id=body.wallet_id)
    chain = state.chains.get(wallet.chain)
    asset = chain.asset(body.asset)
    hypothetical = Withdrawal(
        id="dry-run",
        owner=wallet.owner,
        wallet_id=wallet.id,
        chain=wallet.chain,
        asset=asset.symbol,
        destination=chain.normalize_address(body.to),
        amount=to_base_units(body.amount, asset.decimals),
        requested_by=body.initiator,
        idempotency_key="dry-run",
        request_hash="dry-run",
    )
    if body.version is None:
        version, document = await store.current(session)
    else:
        row = await store.version(session, body.version)
        version, document = row.version, PolicyDocument.model_validate(row.document)
    judge = PolicyJudge(state.sessions, state.chains, PolicySettings.from_settings(state.settings))  # type: ignore[arg-type]
    candidate, judgement = await judge.explain(session, hypothetical, wallet, document, version)
    quorum = None
    if judgement.quorum is not None and judgement.approvals_required:
        quorum = judgement.quorum.model_dump(mode="json", exclude_none=True) | {"approvers": judgement.approvers}
    return PolicyTestResult(
        version=version,
        outcome=judgement.outcome,
        error_code=judgement.error_code,
        rule_id=judgement.rule_id,
        rule_name=judgement.rule_name,
        reason=judgement.reason,
        quorum=quorum,
        details=judgement.details,
        trace=[TraceStep(rule_id=s.rule_id, name=s.name, matched=s.matched, why=s.why) for s in judgement.trace],
        withdrawal={
            "owner": candidate.owner,
            "wallet_id": candidate.wallet_id,
            "chain": candidate.chain,
            "asset": candidate.asset,
            "amount": body.amount,
            "destination": hypothetical.destination,
            "initiator": candidate.initiator,
            "initiator_roles": sorted(candidate.initiator_roles),
            "pool_tier": candidate.pool_tier,
            "in_address_book": candidate.in_address_book,
            "address_book": candidate.address_note,
            "internal": candidate.internal,
        },
    )
