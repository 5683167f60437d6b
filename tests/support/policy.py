"""The global policy in tests (tests/api/test_policy.py, the console): change it through the API as
an admin. Each test that changes it puts it back with conftest's `policy_put_back`."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import ADMIN


async def change_policy(api, change: Callable[[dict], None], summary: str = "test") -> dict:  # type: ignore[no-untyped-def]
    current = (await api.get("/v1/policy", headers=ADMIN)).json()
    document = current["document"]
    change(document)
    body = {"document": document, "base_version": current["version"], "summary": summary}
    changed = await api.put("/v1/policy", json=body, headers=ADMIN)
    assert changed.status_code == 200, changed.text
    return changed.json()


async def add_rule(api, rule: dict, position: int | None = None) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    added = await api.post("/v1/policy/rules", json={"rule": rule, "position": position, "summary": rule["name"]}, headers=ADMIN)
    assert added.status_code == 201, added.text
    body = added.json()
    rule_id = next(r["id"] for r in body["document"]["rules"] if r["name"] == rule["name"])
    return rule_id, body["version"]
