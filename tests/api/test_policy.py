"""The policy engine against the real stack (PostgreSQL, Temporal, anvil, the API): decisions
before funds are held and re-checked before signing, quorums of distinct approvers, velocity
limits under 50 concurrent withdrawals, allowlist-only wallets and address books, versions,
the dry run (`custody policy test`), and the audit entries of all of it.

The policy is global: each test scopes its rules to its own wallets and puts the policy back as
it found it (a new version with the old document)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from sqlmodel import select
from web3 import AsyncHTTPProvider, AsyncWeb3

from activities.policy import PolicyJudge
from chains.registry import ChainRegistry, build_chain
from core.identity import Role
from core.policy import PolicyDocument
from db import audit
from db import policy as store
from models.db import Wallet, Withdrawal
from models.payloads import OperatorRequest
from models.policy import PolicySpend
from tests.conftest import ALICE, create_wallet, custody, fund, new_identity, random_address, replay_and_record, wait_for_status, withdraw
from tests.support.policy import add_rule, change_policy
from workflows.withdrawal import WithdrawalWorkflow

FINAL = {"COMPLETED", "FAILED", "CANCELLED"}
ADMIN = {"Authorization": "Bearer dev-admin-key"}
OPS = {"Authorization": "Bearer dev-ops-key"}
# The policy is global: every test here puts it back as it found it.
pytestmark = pytest.mark.usefixtures("policy_put_back")


@pytest.fixture
def settings(base_settings, task_queue):  # type: ignore[no-untyped-def]
    return base_settings.model_copy(update={"task_queue": task_queue, "approval_thresholds": {"anvil:ETH": "1"}, "approval_timeout_seconds": 600})


async def detail(api, withdrawal_id: str, headers=ALICE) -> dict:  # type: ignore[no-untyped-def]
    return (await api.get(f"/v1/withdrawals/{withdrawal_id}", headers=headers)).json()


def web3_of(api) -> AsyncWeb3:  # type: ignore[no-untyped-def]
    return AsyncWeb3(AsyncHTTPProvider(api._transport.app.state.custody.settings.chains["anvil"].rpc_url))


async def test_splitting_a_withdrawal_under_the_approval_threshold_still_needs_a_second_person(api):
    """The bug that opened the issue: two 1 ETH withdrawals under a 1 ETH threshold both
    completed unapproved, because the threshold was checked per withdrawal only."""
    wallet = await create_wallet(api)
    await fund(api, wallet, "3")
    first = (await withdraw(api, wallet, random_address(), "1")).json()
    assert (await wait_for_status(api, first["id"], FINAL))["status"] == "COMPLETED"
    second = (await withdraw(api, wallet, random_address(), "1")).json()
    held = await wait_for_status(api, second["id"], {"AWAITING_APPROVAL", *FINAL})
    assert held["status"] == "AWAITING_APPROVAL", held
    assert held["attempts"] == []
    assert held["policy_rule_id"] == "settings:approval-threshold:anvil:ETH" and held["policy_outcome"] == "REQUIRE_APPROVAL"
    [decided] = held["policy_decisions"]
    assert decided["stage"] == "DECIDE" and decided["quorum"]["count"] == 1
    assert "needs 1 approver(s) with role APPROVER" in decided["reason"]
    assert (await api.post(f"/v1/withdrawals/{second['id']}/approve", json={}, headers=OPS)).status_code == 200
    done = await wait_for_status(api, second["id"], FINAL)
    assert done["status"] == "COMPLETED" and done["approvals"] == ["ops"]
    assert [d["stage"] for d in done["policy_decisions"]] == ["DECIDE", "RECHECK"]


async def test_fifty_concurrent_withdrawals_never_exceed_a_24h_limit(api, sessions, client):
    wallet = await create_wallet(api)
    await fund(api, wallet, "2")
    rule_id, version = await add_rule(
        api,
        {
            "name": f"0.5 ETH a day from {wallet['id']}",
            "match": {"source": {"wallets": [wallet["id"]]}, "chains": ["anvil"], "assets": ["ETH"]},
            "action": "ALLOW",
            "limits": [{"per": "WALLET", "window_seconds": 86400, "max_amount": "0.5"}],
        },
    )
    destination = random_address()
    responses = await asyncio.gather(*(withdraw(api, wallet, destination, "0.1") for _ in range(50)))
    assert all(r.status_code == 202 for r in responses)
    done = [await wait_for_status(api, r.json()["id"], FINAL, timeout=180) for r in responses]
    completed = [d for d in done if d["status"] == "COMPLETED"]
    refused = [d for d in done if d["status"] == "FAILED"]
    assert len(completed) == 5 and len(refused) == 45, [(d["status"], d["error_code"]) for d in done]
    assert await web3_of(api).eth.get_balance(destination) == 5 * 10**17  # never more than the limit
    for d in refused:
        assert d["error_code"] == "LIMIT_EXCEEDED" and d["attempts"] == [] and d["policy_rule_id"] == rule_id
        assert f"rule {rule_id}" in d["error_message"] and f"policy v{version}" in d["error_message"]
        assert "0.5 ETH of 0.5 ETH used, 0 ETH left" in d["error_message"]
    one = await detail(api, refused[0]["id"])
    assert one["policy_decisions"][0]["details"]["remaining_amount"] == "0 ETH"
    assert one["policy_decisions"][0]["details"]["used_amount"] == "0.5 ETH"
    balances = (await api.get(f"/v1/wallets/{wallet['id']}/balances", headers=ALICE)).json()
    assert next(b for b in balances["balances"] if b["asset"] == "ETH")["reserved"] == "0"  # refused ones never held funds
    async with sessions() as session:
        spends = (await session.exec(select(PolicySpend).where(PolicySpend.wallet_id == wallet["id"]))).all()
    assert sum(s.amount for s in spends if s.state == "ACTIVE") == 5 * 10**17
    await replay_and_record(client, f"withdrawal-{refused[0]['id']}", "WithdrawalWorkflow__v4_limit_exceeded")


async def test_decisions_on_ten_workers_at_once_admit_exactly_the_limit(sessions, settings):
    """The same race without Temporal's pacing: 60 decisions at once from ten judges (ten
    workers: separate in-process locks, one PostgreSQL), each committing its spend."""
    wallet = Wallet(
        id=str(uuid.uuid4()),
        owner="alice",
        chain="anvil",
        label=f"race-{uuid.uuid4().hex[:6]}",
        status="ACTIVE",
        address=random_address(),
        signer_backend="local",
    )
    rule = {
        "id": "race",
        "name": "3 a day",
        "match": {"source": {"wallets": [wallet.id]}, "assets": ["ETH"]},
        "action": "ALLOW",
        "limits": [{"per": "WALLET", "window_seconds": 86400, "max_amount": "0.3", "max_count": 3}],
    }
    ids = [str(uuid.uuid4()) for _ in range(60)]
    async with sessions() as session, session.begin():
        _, document = await store.current(session)
        await store.publish(session, PolicyDocument.model_validate(document.model_dump() | {"rules": [rule]}), author="test", summary="race")
        session.add(wallet)
        await session.flush()
        for withdrawal_id in ids:
            session.add(
                Withdrawal(
                    id=withdrawal_id,
                    owner="alice",
                    wallet_id=wallet.id,
                    chain="anvil",
                    asset="ETH",
                    destination=random_address(),
                    amount=10**17,
                    idempotency_key=withdrawal_id,
                    request_hash=withdrawal_id,
                )
            )
    chains = ChainRegistry.from_settings(settings)
    judges = [PolicyJudge(sessions, chains) for _ in range(10)]
    verdicts = await asyncio.gather(*(judges[i % 10].decide(withdrawal_id) for i, withdrawal_id in enumerate(ids)))
    outcomes = [v.outcome for v in verdicts]
    assert outcomes.count("ALLOW") == 3 and outcomes.count("LIMIT_EXCEEDED") == 57, outcomes
    assert await asyncio.gather(*(judges[0].decide(i) for i in ids)) == verdicts  # a retry returns the recorded decision


class StallingJudge(PolicyJudge):
    """A worker's judge that stops inside one withdrawal's decision (its locks held, its spend
    not yet written) until the test lets it go."""

    def __init__(self, sessions, chains, stall: str) -> None:  # type: ignore[no-untyped-def]
        super().__init__(sessions, chains)
        self.stall, self.inside, self.let_go = stall, asyncio.Event(), asyncio.Event()

    async def candidate(self, session, withdrawal, wallet):  # type: ignore[no-untyped-def]
        if withdrawal.id == self.stall:
            self.inside.set()
            await self.let_go.wait()
        return await super().candidate(session, withdrawal, wallet)


async def publish_rule(sessions, rule: dict) -> None:  # type: ignore[no-untyped-def]
    """A policy of `rule` alone (the fixture puts the old one back)."""
    async with sessions() as session, session.begin():
        _, document = await store.current(session)
        await store.publish(session, PolicyDocument.model_validate(document.model_dump() | {"rules": [rule]}), author="test", summary=rule["name"])


async def stored_withdrawals(sessions, chain: str, owners: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
    """One wallet and one 1-unit withdrawal per entry of `owners`, written straight to the database."""
    wallets = [
        Wallet(id=str(uuid.uuid4()), owner=owner, chain=chain, label=f"w{i}", status="ACTIVE", address=random_address(), signer_backend="local")
        for i, owner in enumerate(owners)
    ]
    ids = [str(uuid.uuid4()) for _ in owners]
    async with sessions() as session, session.begin():
        session.add_all(wallets)
        await session.flush()
        session.add_all(
            Withdrawal(
                id=withdrawal_id,
                owner=wallet.owner,
                wallet_id=wallet.id,
                chain=chain,
                asset="ETH",
                destination=random_address(),
                amount=10**18,
                idempotency_key=withdrawal_id,
                request_hash=withdrawal_id,
            )
            for withdrawal_id, wallet in zip(ids, wallets, strict=True)
        )
    return ids


def own_chain(settings) -> tuple[str, ChainRegistry]:  # type: ignore[no-untyped-def]
    """A chain of the test's own (anvil's settings under another name): a window over everyone
    counts no other test's withdrawals."""
    chain = f"race{uuid.uuid4().hex[:8]}"
    return chain, ChainRegistry({chain: build_chain(chain, settings.chains["anvil"])})


def a_day(chain: str, per: str | None, count: int = 1) -> dict:
    """At most `count` withdrawals a day on `chain` per wallet, owner or for everyone (None: no limit)."""
    rule = {"id": "a-day", "name": f"{count} a day per {per}", "match": {"chains": [chain]}, "action": "ALLOW"}
    return rule | ({"limits": [{"per": per, "window_seconds": 86400, "max_count": count}]} if per else {})


async def stall_inside(judge: StallingJudge) -> asyncio.Task:
    deciding = asyncio.create_task(judge.decide(judge.stall))
    await asyncio.wait_for(judge.inside.wait(), 30)
    return deciding


async def assert_still_waiting(*decisions: asyncio.Task) -> None:
    """Not decided while the stalled decision's spend is unwritten: a decision that did not wait
    would be made within this time; only the stalled one's commit may let it go."""
    done, _ = await asyncio.wait(decisions, timeout=2)
    assert not done, [t.result() for t in done]


@pytest.mark.parametrize("per", ["OWNER", "CHAIN_ASSET"])
async def test_a_decision_waits_for_those_its_windows_add_up_and_for_no_others(sessions, settings, per):
    """One a day per owner (or for everyone): while the first withdrawal's decision is under way
    on one worker, the same owner's other wallet waits on another worker and is refused by the
    first's spend; another owner's, which no window connects, is decided meanwhile (with a
    window over everyone it waits and is refused too)."""
    chain, chains = own_chain(settings)
    await publish_rule(sessions, a_day(chain, per))
    first, same_owner, other_owner = await stored_withdrawals(sessions, chain, ["alice", "alice", "bob"])
    stalled = StallingJudge(sessions, chains, stall=first)
    deciding = await stall_inside(stalled)
    waiting = asyncio.create_task(PolicyJudge(sessions, chains).decide(same_owner))
    other = asyncio.create_task(PolicyJudge(sessions, chains).decide(other_owner))
    if per == "OWNER":
        assert (await asyncio.wait_for(other, 30)).outcome == "ALLOW"  # while the first is still under way
    await assert_still_waiting(*([waiting] if per == "OWNER" else [waiting, other]))
    stalled.let_go.set()
    assert (await deciding).outcome == "ALLOW"
    assert (await waiting).outcome == "LIMIT_EXCEEDED"
    assert (await other).outcome == ("ALLOW" if per == "OWNER" else "LIMIT_EXCEEDED")


async def test_a_decision_under_a_newer_wider_window_waits_for_one_under_the_older_policy(sessions, settings):
    """A decision under way was judged by a policy without windows (it locked only its wallet);
    then the policy limits everyone. The next decision, on a worker whose last decision needed
    no window either, starts with narrow locks, sees the wider window, locks again, and waits
    for the first to commit: it counts the first's spend."""
    chain, chains = own_chain(settings)
    await publish_rule(sessions, a_day(chain, None))
    judge = PolicyJudge(sessions, chains)
    earlier, first, later = await stored_withdrawals(sessions, chain, ["carol", "alice", "bob"])
    assert (await judge.decide(earlier)).outcome == "ALLOW"
    stalled = StallingJudge(sessions, chains, stall=first)
    deciding = await stall_inside(stalled)
    await publish_rule(sessions, a_day(chain, "CHAIN_ASSET", count=2))
    waiting = asyncio.create_task(judge.decide(later))
    await assert_still_waiting(waiting)
    stalled.let_go.set()
    assert (await deciding).outcome == "ALLOW"
    assert (await waiting).outcome == "LIMIT_EXCEEDED"  # carol's and alice's: two of two


async def test_two_of_three_approvers_of_a_group_release_a_withdrawal_above_a_threshold(api, sessions, client):
    members = [await new_identity(sessions, Role.APPROVER) for _ in range(3)]
    group = f"treasury-{uuid.uuid4().hex[:6]}"
    await change_policy(api, lambda d: d["groups"].__setitem__(group, [user for _, user in members]))
    wallet = await create_wallet(api)
    await fund(api, wallet, "3")
    rule_id, _ = await add_rule(
        api,
        {
            "name": f"2 of 3 above 0.5 ETH from {wallet['id']}",
            "match": {"source": {"wallets": [wallet["id"]]}, "assets": ["ETH"], "amount": {"above": "0.5"}},
            "action": "REQUIRE_APPROVAL",
            "quorum": {"count": 2, "group": group},
        },
        position=0,
    )
    small = (await withdraw(api, wallet, random_address(), "0.5")).json()
    accepted = (await withdraw(api, wallet, random_address(), "0.9")).json()
    assert (await wait_for_status(api, small["id"], FINAL))["status"] == "COMPLETED"
    held = await wait_for_status(api, accepted["id"], {"AWAITING_APPROVAL", *FINAL})
    assert held["status"] == "AWAITING_APPROVAL" and held["policy_rule_id"] == rule_id
    assert held["policy_decisions"][0]["quorum"] == {"count": 2, "group": group, "approvers": [u for _, u in members]}

    url = f"/v1/withdrawals/{accepted['id']}/approve"
    outsider = await api.post(url, json={}, headers=OPS)  # an approver, but not in the group
    assert outsider.status_code == 403 and outsider.json()["error"]["code"] == "NOT_AN_APPROVER"
    (first, first_id), (second, second_id), _ = members
    assert (await api.post(url, json={"reason": "looks right"}, headers=first)).status_code == 200
    again = await api.post(url, json={}, headers=first)
    assert again.status_code == 409 and again.json()["error"]["code"] == "ALREADY_APPROVED"
    state = await client.get_workflow_handle(f"withdrawal-{accepted['id']}").query(WithdrawalWorkflow.policy)
    assert state.approvals == [first_id] and state.verdict.approvals_required == 2
    assert (await detail(api, accepted["id"]))["status"] == "AWAITING_APPROVAL"  # one of two is not enough
    assert (await api.post(url, json={}, headers=second)).status_code == 200
    done = await wait_for_status(api, accepted["id"], FINAL)
    assert done["status"] == "COMPLETED" and done["approvals"] == [first_id, second_id]
    await replay_and_record(client, f"withdrawal-{accepted['id']}", "WithdrawalWorkflow__v4_quorum_approved")


async def test_a_quorum_is_re_checked_from_the_database_before_signing(api, sessions, client):
    """One approval through the API and a second one sent straight to Temporal: the workflow
    moves on, but the signing step counts recorded approvals only, so nothing is signed."""
    members = [await new_identity(sessions, Role.APPROVER) for _ in range(2)]
    group = f"desk-{uuid.uuid4().hex[:6]}"
    await change_policy(api, lambda d: d["groups"].__setitem__(group, [user for _, user in members]))
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    await add_rule(
        api,
        {
            "name": f"2 of desk for {wallet['id']}",
            "match": {"source": {"wallets": [wallet["id"]]}},
            "action": "REQUIRE_APPROVAL",
            "quorum": {"count": 2, "group": group},
        },
        position=0,
    )
    accepted = (await withdraw(api, wallet, random_address(), "0.1")).json()
    await wait_for_status(api, accepted["id"], {"AWAITING_APPROVAL"})
    assert (await api.post(f"/v1/withdrawals/{accepted['id']}/approve", json={}, headers=members[0][0])).status_code == 200
    await client.get_workflow_handle(f"withdrawal-{accepted['id']}").execute_update("approve", OperatorRequest(by=members[1][1]))
    done = await wait_for_status(api, accepted["id"], FINAL)
    assert (done["status"], done["error_code"], done["attempts"]) == ("FAILED", "APPROVAL_NOT_RECORDED", [])
    assert "needs 2 approval(s)" in done["error_message"] and "1 recorded" in done["error_message"]


async def test_a_policy_change_after_the_decision_is_enforced_before_signing(api, sessions, client):
    wallet = await create_wallet(api)
    await fund(api, wallet, "3")
    accepted = (await withdraw(api, wallet, random_address(), "1.5")).json()  # above the 1 ETH threshold
    held = await wait_for_status(api, accepted["id"], {"AWAITING_APPROVAL"})
    decided_version = held["policy_version"]
    rule_id, version = await add_rule(
        api,
        {
            "name": f"freeze {wallet['id']} by policy",
            "match": {"source": {"wallets": [wallet["id"]]}},
            "action": "BLOCK",
        },
        position=0,
    )
    assert version > decided_version
    assert (await api.post(f"/v1/withdrawals/{accepted['id']}/approve", json={}, headers=OPS)).status_code == 200
    done = await wait_for_status(api, accepted["id"], FINAL)
    assert (done["status"], done["error_code"], done["attempts"], done["tx_hash"]) == ("FAILED", "POLICY_BLOCKED", [], None)
    decide, recheck = done["policy_decisions"]
    assert (decide["stage"], decide["outcome"], decide["policy_version"]) == ("DECIDE", "REQUIRE_APPROVAL", decided_version)
    assert (recheck["stage"], recheck["outcome"], recheck["rule_id"], recheck["policy_version"]) == ("RECHECK", "BLOCK", rule_id, version)
    balances = (await api.get(f"/v1/wallets/{wallet['id']}/balances", headers=ALICE)).json()
    assert next(b for b in balances["balances"] if b["asset"] == "ETH")["reserved"] == "0"
    async with sessions() as session:
        actions = [e.action for e in await audit.entries(session, object_id=accepted["id"], limit=100)]
        spend = (await session.exec(select(PolicySpend).where(PolicySpend.withdrawal_id == accepted["id"]))).one()
    assert {"withdrawal.policy_decided", "withdrawal.policy_rechecked", "withdrawal.approved"} <= set(actions)
    assert spend.state == "RELEASED"  # paid nothing: its share of the window is given back
    await replay_and_record(client, f"withdrawal-{accepted['id']}", "WithdrawalWorkflow__v4_recheck_blocked")


async def test_an_allowlist_only_wallet_pays_only_usable_address_book_entries(api, sessions, client):
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    await change_policy(api, lambda d: d["allowlist_only"]["wallets"].append(wallet["id"]), "treasury is allowlist-only")
    stranger = (await withdraw(api, wallet, random_address(), "0.1")).json()
    refused = await wait_for_status(api, stranger["id"], FINAL)
    assert (refused["status"], refused["error_code"], refused["policy_rule_id"]) == ("FAILED", "POLICY_BLOCKED", "allowlist-only")
    assert "is allowlist-only" in refused["error_message"] and refused["attempts"] == []
    await replay_and_record(client, f"withdrawal-{stranger['id']}", "WithdrawalWorkflow__v4_policy_blocked")

    desk = random_address()
    added = await api.post("/v1/address-book", json={"chain": "anvil", "address": desk.lower(), "label": "desk"}, headers=ALICE)
    assert added.status_code == 201, added.text
    entry = added.json()
    assert entry["address"] == desk and entry["usable"] is False and "cooling until" in entry["status"]  # 48 h by default
    cooling = (await withdraw(api, wallet, desk, "0.1")).json()
    assert (await wait_for_status(api, cooling["id"], FINAL))["error_code"] == "POLICY_BLOCKED"

    # Two approvers (the default address-book quorum), never the owner, each once.
    own = await api.post(f"/v1/address-book/{entry['id']}/approve", json={}, headers=OPS)
    assert own.status_code == 200 and own.json()["usable"] is False and own.json()["approvals"] == ["ops"]
    second, second_id = await new_identity(sessions, Role.APPROVER)
    twice = await api.post(f"/v1/address-book/{entry['id']}/approve", headers=OPS)
    assert twice.status_code == 403 and twice.json()["error"]["code"] == "NOT_AN_APPROVER"
    approved = (await api.post(f"/v1/address-book/{entry['id']}/approve", headers=second)).json()
    assert approved["usable"] is True and approved["approvals"] == ["ops", second_id]
    paid = (await withdraw(api, wallet, desk, "0.1")).json()
    assert (await wait_for_status(api, paid["id"], FINAL))["status"] == "COMPLETED"
    assert await web3_of(api).eth.get_balance(desk) == 10**17

    # Removed: not usable any more.
    assert (await api.delete(f"/v1/address-book/{entry['id']}", headers=ALICE)).json()["removed_at"] is not None
    after = (await withdraw(api, wallet, desk, "0.1")).json()
    assert (await wait_for_status(api, after["id"], FINAL))["error_code"] == "POLICY_BLOCKED"
    async with sessions() as session:
        actions = [e.action for e in await audit.entries(session, object_id=entry["id"], limit=10)]
    assert actions == ["address_book.removed", "address_book.approved", "address_book.approved", "address_book.added"]


async def test_an_address_book_entry_is_usable_once_its_cooling_period_passed(api):
    await change_policy(api, lambda d: d["address_book"].__setitem__("cooling_seconds", 0))
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    desk = random_address()
    entry = (await api.post("/v1/address-book", json={"chain": "anvil", "address": desk}, headers=ALICE)).json()
    assert entry["usable"] is True and "cooled off" in entry["status"]
    await add_rule(
        api,
        {
            "name": f"{wallet['id']} pays its book only",
            "match": {"source": {"wallets": [wallet["id"]]}, "destination": "ONE_TIME"},
            "action": "BLOCK",
        },
        position=0,
    )
    book = (await withdraw(api, wallet, desk, "0.1")).json()
    elsewhere = (await withdraw(api, wallet, random_address(), "0.1")).json()
    assert (await wait_for_status(api, book["id"], FINAL))["status"] == "COMPLETED"
    assert (await wait_for_status(api, elsewhere["id"], FINAL))["error_code"] == "POLICY_BLOCKED"
    others = await api.get("/v1/address-book", headers={"Authorization": "Bearer dev-bob-key"})
    assert entry["id"] not in [e["id"] for e in others.json()["items"]]
    assert (await api.delete(f"/v1/address-book/{entry['id']}", headers={"Authorization": "Bearer dev-bob-key"})).status_code == 404


async def test_every_change_is_a_new_version_with_its_author_and_concurrent_edits_conflict(api, sessions):
    before = (await api.get("/v1/policy", headers=ADMIN)).json()
    rule_id, version = await add_rule(api, {"name": f"noop {uuid.uuid4().hex[:6]}", "match": {"source": {"owners": ["nobody"]}}, "action": "BLOCK"})
    assert version == before["version"] + 1
    stale = await api.put("/v1/policy", json={"document": before["document"], "base_version": before["version"]}, headers=ADMIN)
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "POLICY_VERSION_CONFLICT"
    changed = await api.put(
        f"/v1/policy/rules/{rule_id}", json={"rule": {"name": "renamed", "match": {}, "action": "ALLOW", "enabled": False}}, headers=ADMIN
    )
    assert changed.status_code == 200 and changed.json()["version"] == version + 1
    removed = await api.delete(f"/v1/policy/rules/{rule_id}", headers=ADMIN)
    assert removed.status_code == 200 and removed.json()["document"]["rules"] == before["document"]["rules"]
    versions = (await api.get("/v1/policy/versions?limit=3", headers=OPS)).json()["items"]
    assert [v["version"] for v in versions] == [version + 2, version + 1, version]
    assert all(v["author"] == "admin" for v in versions) and versions[0]["summary"] == f"rule {rule_id} removed"
    old = (await api.get(f"/v1/policy/versions/{version}", headers=OPS)).json()
    assert old["document"]["rules"][-1]["id"] == rule_id and old["author"] == "admin"
    bad = await api.post(
        "/v1/policy/rules", json={"rule": {"name": "x", "action": "REQUIRE_APPROVAL", "quorum": {"count": 2, "group": "nope"}}}, headers=ADMIN
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "INVALID_POLICY" and "no group" in bad.text
    unknown = await api.post("/v1/policy/rules", json={"rule": {"name": "x", "action": "BLOCK", "match": {"assets": ["DOGE"]}}}, headers=ADMIN)
    assert unknown.status_code == 422 and "DOGE" in unknown.json()["error"]["message"]
    assert (await api.put("/v1/policy", json={"document": before["document"]}, headers=OPS)).status_code == 403
    async with sessions() as session:
        changes = await audit.entries(session, action="policy.changed", limit=3)
    assert [e.object_id for e in changes] == [str(version + 2), str(version + 1), str(version)]
    assert changes[0].actor == "admin" and changes[0].details["rule_id"] == rule_id


async def test_a_withdrawal_that_paid_nothing_gives_its_share_of_the_window_back(api):
    wallet = await create_wallet(api)
    await fund(api, wallet, "0.5")
    await add_rule(
        api,
        {
            "name": f"5 ETH a day from {wallet['id']}",
            "match": {"source": {"wallets": [wallet["id"]]}, "assets": ["ETH"]},
            "action": "ALLOW",
            "limits": [{"per": "WALLET", "window_seconds": 86400, "max_amount": "5", "max_count": 10}],
        },
        position=0,
    )
    poor = (await withdraw(api, wallet, random_address(), "0.9")).json()  # allowed, then more than the wallet holds
    assert (await wait_for_status(api, poor["id"], FINAL))["error_code"] == "INSUFFICIENT_FUNDS"
    dry = await api.post("/v1/policy/test", json={"wallet_id": wallet["id"], "to": random_address(), "asset": "ETH", "amount": "1"}, headers=OPS)
    assert dry.status_code == 200 and dry.json()["outcome"] == "ALLOW"
    paid = (await withdraw(api, wallet, random_address(), "0.2")).json()
    assert (await wait_for_status(api, paid["id"], FINAL))["status"] == "COMPLETED"
    over = await api.post("/v1/policy/test", json={"wallet_id": wallet["id"], "to": random_address(), "asset": "ETH", "amount": "4.9"}, headers=OPS)
    assert over.json()["outcome"] == "LIMIT_EXCEEDED" and over.json()["details"]["used_amount"] == "0.2 ETH"
    assert over.json()["details"]["remaining_amount"] == "4.8 ETH" and over.json()["details"]["used_count"] == "1"


async def test_custody_policy_test_explains_which_rule_matches_and_why(api_url, settings):
    code, out, err = await custody(api_url, "wallets", "create", "--chain", "anvil", "--label", f"p-{uuid.uuid4().hex[:6]}")
    assert code == 0, err
    wallet = json.loads(out)
    rule = {
        "name": f"big from {wallet['id']}",
        "match": {"source": {"wallets": [wallet["id"]]}, "assets": ["ETH"], "amount": {"above": "2"}},
        "action": "BLOCK",
    }
    code, out, err = await custody(api_url, "policy", "add-rule", "--json", json.dumps(rule), "--position", "0", key="dev-admin-key")
    assert code == 0 and "policy is now v" in out, err
    to = random_address()
    code, out, err = await custody(
        api_url, "policy", "test", "--wallet", wallet["id"], "--to", to, "--asset", "ETH", "--amount", "3", key="dev-ops-key"
    )
    assert code == 1, (out, err)
    assert "MATCH  r-" in out and "=> BLOCK (POLICY_BLOCKED)" in out and "not in the owner's address book" in out
    code, out, _ = await custody(
        api_url, "policy", "test", "--wallet", wallet["id"], "--to", to, "--asset", "ETH", "--amount", "1.5", key="dev-ops-key"
    )
    assert code == 0, out
    assert "skip   r-" in out and "amount 1.5 ETH is not above 2 ETH" in out
    # The settings' threshold rule (1 ETH) is tried after the stored rules, and says why it matched.
    assert "MATCH  settings:approval-threshold:anvil:ETH" in out and "=> REQUIRE_APPROVAL" in out and '"count": 1' in out
    code, out, _ = await custody(api_url, "policy", "show", key="dev-ops-key")
    assert code == 0 and f"big from {wallet['id']}" in out and "default action: ALLOW" in out
    code, _, err = await custody(api_url, "policy", "add-rule", "--json", json.dumps(rule), key="dev-ops-key")
    assert code == 1 and "FORBIDDEN" in err
    code, out, err = await custody(api_url, "addresses", "add", "--chain", "anvil", "--address", to, "--label", "desk")
    assert code == 0 and json.loads(out)["usable"] is False, err
    code, out, _ = await custody(api_url, "addresses", "list")
    assert to in out and "cooling until" in out
    code, out, err = await custody(api_url, "policy", "allowlist-only", "--wallet", wallet["id"], key="dev-admin-key")
    assert code == 0, err
    code, out, _ = await custody(
        api_url, "policy", "test", "--wallet", wallet["id"], "--to", to, "--asset", "ETH", "--amount", "0.1", key="dev-ops-key"
    )
    assert code == 1 and "allowlist-only" in out and "cooling until" in out
