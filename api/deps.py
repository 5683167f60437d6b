"""FastAPI dependencies as Annotated aliases; clients live on app.state (see api.main)."""

from __future__ import annotations

from collections.abc import AsyncIterator
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


def get_state(request: Request) -> AppState:
    return request.app.state.custody


async def get_session(state: Annotated[AppState, Depends(get_state)]) -> AsyncIterator[AsyncSession]:
    async with state.sessions() as session:  # type: ignore[operator]
        yield session


def get_owner(caller: Annotated[Identity, Depends(authorized)]) -> str:
    """The caller's user id (the owner of what they create), once the route's grants passed."""
    return caller.id


StateDep = Annotated[AppState, Depends(get_state)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
# The caller, authenticated and allowed on this route (api/permissions.py); `any_owner` says
# whether they act on anyone's objects or only their own.
CallerDep = Annotated[Identity, Depends(authorized)]
OwnerDep = Annotated[str, Depends(get_owner)]
