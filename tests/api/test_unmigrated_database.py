"""The API on a database its migrations have not reached yet (started before the worker, which
applies them): a stable 503 DATABASE_NOT_MIGRATED, never a 500."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from api.main import create_app
from tests.conftest import ALICE


async def test_requests_to_a_database_without_the_schema_are_503_database_not_migrated(base_settings, client) -> None:
    url = make_url(base_settings.database_url)
    empty = f"custody_unmigrated_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        await admin.execute(f'CREATE DATABASE "{empty}"')
        settings = base_settings.model_copy(update={"database_url": url.set(database=empty).render_as_string(hide_password=False)})
        app = create_app(settings, temporal=client)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://custody.test") as api:
                for method, path in (("GET", "/v1/wallets"), ("POST", "/v1/wallets")):
                    response = await api.request(method, path, headers=ALICE, json={"chain": "anvil", "label": "x"})
                    assert response.status_code == 503, response.text
                    assert response.json()["error"]["code"] == "DATABASE_NOT_MIGRATED"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{empty}" WITH (FORCE)')
        await admin.close()
