"""FastAPI dependencies as Annotated aliases; clients live on app.state (see api.main)."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from redis.asyncio import Redis
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client

from chains.registry import ChainRegistry
from core.errors import Unauthorized
from core.settings import Settings


@dataclass
class AppState:
    settings: Settings
    sessions: object  # SessionFactory
    temporal: Client
    redis: Redis
    chains: ChainRegistry


def get_state(request: Request) -> AppState:
    return request.app.state.custody


async def get_session(state: Annotated[AppState, Depends(get_state)]) -> AsyncIterator[AsyncSession]:
    async with state.sessions() as session:  # type: ignore[operator]
        yield session


def get_owner(
    state: Annotated[AppState, Depends(get_state)],
    authorization: Annotated[str | None, Header()] = None,
) -> str:
    """The caller, from `Authorization: Bearer <api key>` (keys from settings for now)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer API key")
    for key, owner in state.settings.api_keys.items():
        if hmac.compare_digest(key.encode(), token.encode()):
            return owner
    raise Unauthorized("unknown API key")


StateDep = Annotated[AppState, Depends(get_state)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
OwnerDep = Annotated[str, Depends(get_owner)]
