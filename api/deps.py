"""FastAPI dependencies as Annotated aliases; clients live on app.state (see api.main)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from redis.asyncio import Redis
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client

from api.auth import authorized
from chains.registry import ChainRegistry
from core.identity import Identity
from core.settings import Settings


@dataclass
class AppState:
    settings: Settings
    sessions: object  # SessionFactory
    temporal: Client
    redis: Redis
    chains: ChainRegistry
    limiter: Any = None  # api.ratelimit.RateLimiter
    oidc: Any = None  # api.oidc.OidcVerifier, when an issuer is configured
    secret_box: Any = None  # signers.secret_box.SecretBox: seals webhook secrets under the keystore KEK


def get_state(request: Request) -> AppState:
    return request.app.state.custody


async def get_session(state: Annotated[AppState, Depends(get_state)]) -> AsyncIterator[AsyncSession]:
    async with state.sessions() as session:  # type: ignore[operator]
        yield session


@asynccontextmanager
async def snapshot_session(state: AppState) -> AsyncIterator[AsyncSession]:
    """A session whose reads all see one snapshot (REPEATABLE READ, read-only): for answers made
    of several statements (a withdrawal with its history and attempts), which under READ
    COMMITTED could mix a row from before a worker's commit with attempts from after it."""
    async with state.sessions() as session:  # type: ignore[operator]
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True})
        yield session


async def get_snapshot_session(state: Annotated[AppState, Depends(get_state)]) -> AsyncIterator[AsyncSession]:
    async with snapshot_session(state) as session:
        yield session


def get_owner(caller: Annotated[Identity, Depends(authorized)]) -> str:
    """The caller's user id (the owner of what they create), once the route's grants passed."""
    return caller.id


StateDep = Annotated[AppState, Depends(get_state)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
SnapshotSessionDep = Annotated[AsyncSession, Depends(get_snapshot_session)]
# The caller, authenticated and allowed on this route (api/permissions.py); `any_owner` says
# whether they act on anyone's objects or only their own.
CallerDep = Annotated[Identity, Depends(authorized)]
OwnerDep = Annotated[str, Depends(get_owner)]
