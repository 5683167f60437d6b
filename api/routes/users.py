"""The caller's own user: `GET /v1/users/me` creates it on the first call (OIDC users arrive
with nothing but a token) and makes sure it has a wallet labelled "default" on every chain of
CUSTODY_DEFAULT_WALLET_CHAINS (invisible wallets: created before the user asks). Idempotent,
also under concurrent first calls: every row is an INSERT ... ON CONFLICT DO NOTHING and every
wallet's workflow id is unique."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from api.deps import CallerDep, SessionDep, StateDep
from core.identity import Identity, Role
from models.access import User
from models.db import Wallet, utcnow
from models.payloads import WalletCreationInput
from models.schemas import WalletPublic
from workflows.wallet_creation import WalletCreationWorkflow

router = APIRouter(prefix="/v1/users", tags=["users"])

DEFAULT_LABEL = "default"


class Me(BaseModel):
    id: str
    roles: list[str]
    scopes: list[str]
    via: str
    status: str
    blocked_reason: str | None = None
    created_at: datetime
    default_wallets: list[WalletPublic]


def default_wallet_key(chain: str) -> str:
    return f"default-wallet:{chain}"


async def _ensure_user(session: SessionDep, caller: Identity) -> User:
    now = utcnow()
    oidc = caller.via.startswith("oidc:")
    values = dict(id=caller.id, roles=caller.role_names if oidc else [], status="ACTIVE", created_at=now, updated_at=now)
    if oidc:
        values |= {"oidc_issuer": caller.via.removeprefix("oidc:"), "oidc_subject": caller.subject}
    await session.exec(insert(User.__table__).values(**values).on_conflict_do_nothing())  # type: ignore[call-overload,attr-defined]
    user = await session.get(User, caller.id, with_for_update=True)
    assert user is not None
    if oidc:
        # The IdP is the authority on an OIDC user's roles; the row shows the last ones seen.
        if user.oidc_subject is None:
            user.oidc_issuer, user.oidc_subject = values["oidc_issuer"], values["oidc_subject"]
        if user.roles != caller.role_names:
            user.roles, user.updated_at = caller.role_names, now
        session.add(user)
    await session.commit()
    return user


async def _ensure_default_wallets(state: StateDep, session: SessionDep, owner: str) -> list[Wallet]:
    wallets = []
    for chain in state.settings.default_wallet_chains:
        key = default_wallet_key(chain)
        await session.exec(  # type: ignore[call-overload]
            insert(Wallet.__table__)  # type: ignore[attr-defined]
            .values(
                id=str(uuid.uuid4()),
                owner=owner,
                chain=chain,
                label=DEFAULT_LABEL,
                status="CREATING",
                signer_backend=state.settings.signer_backend,
                idempotency_key=key,
                created_at=utcnow(),
                updated_at=utcnow(),
            )
            .on_conflict_do_nothing()  # made by an earlier (or a concurrent) call, or a "default" of their own
        )
        await session.commit()
        wallet = (await session.exec(select(Wallet).where(Wallet.owner == owner, Wallet.chain == chain, Wallet.idempotency_key == key))).first()
        if wallet is None:
            wallet = (
                await session.exec(
                    select(Wallet).where(
                        Wallet.owner == owner, Wallet.chain == chain, Wallet.label == DEFAULT_LABEL, col(Wallet.status).in_(("CREATING", "ACTIVE"))
                    )
                )
            ).first()
        if wallet is None:
            continue
        if wallet.status == "CREATING":
            try:
                await state.temporal.start_workflow(
                    WalletCreationWorkflow.run,
                    WalletCreationInput(wallet_id=wallet.id),
                    id=f"wallet-{wallet.id}",
                    task_queue=state.settings.task_queue,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    static_summary=f"Create the default {chain} wallet of {owner}",
                )
            except WorkflowAlreadyStartedError:
                pass
        wallets.append(wallet)
    return wallets


@router.get("/me", response_model=Me)
async def me(caller: CallerDep, state: StateDep, session: SessionDep) -> Me:
    """Who the caller is; the first call creates the user and starts their default wallets."""
    user = await _ensure_user(session, caller)
    wallets = await _ensure_default_wallets(state, session, user.id) if Role.USER in caller.roles and not caller.blocked else []
    return Me(
        id=user.id,
        roles=caller.role_names,
        scopes=sorted(s.value for s in caller.scopes),
        via=caller.via,
        status=user.status,
        blocked_reason=user.blocked_reason,
        created_at=user.created_at,
        default_wallets=[WalletPublic.model_validate(w, from_attributes=True) for w in wallets],
    )
