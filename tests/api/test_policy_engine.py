"""The policy engine's judgement alone (core/policy_engine.py): rule order, each condition, amounts
over rolling windows, limits and what remains, allowlist-only sources, HODL movements, and the
document's own validation. The windows' totals are given as numbers here; how PostgreSQL adds
them up under concurrency is tested end to end in tests/api/test_policy.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from core.policy import Counted, Per, PolicyDocument, Rule
from core.policy_engine import Candidate, Judge, Outcome, Totals, Window

ETH = 10**18


def candidate(**changes) -> Candidate:  # type: ignore[no-untyped-def]
    base = dict(
        owner="alice",
        wallet_id="w1",
        chain="anvil",
        asset="ETH",
        decimals=18,
        amount=ETH,
        initiator="alice",
        initiator_roles=frozenset({"USER"}),
        address_note="not in the owner's address book",
    )
    return Candidate(**(base | changes))


def document(*rules: dict, **rest) -> PolicyDocument:  # type: ignore[no-untyped-def]
    return PolicyDocument.model_validate({"rules": [{"id": f"r{i}", **r} for i, r in enumerate(rules)], **rest})


def totals_of(held: dict[Window, Totals] | None = None):  # type: ignore[no-untyped-def]
    """What each window already holds; every window asked for is recorded in `asked`."""
    asked: list[Window] = []

    async def totals(window: Window) -> Totals:
        asked.append(window)
        return (held or {}).get(window, Totals())

    totals.asked = asked  # type: ignore[attr-defined]
    return totals


async def judge(doc: PolicyDocument, c: Candidate, held: dict[Window, Totals] | None = None):  # type: ignore[no-untyped-def]
    return await Judge(doc, 7).judge(c, totals_of(held))


async def test_first_matching_rule_wins_and_the_trace_says_why_the_others_did_not():
    doc = document(
        {"name": "bob only", "match": {"initiator": {"users": ["bob"]}}, "action": "BLOCK"},
        {"name": "off", "enabled": False, "match": {}, "action": "BLOCK"},
        {"name": "polygon", "match": {"chains": ["polygon"]}, "action": "BLOCK"},
        {"name": "eth", "match": {"assets": ["ETH"]}, "action": "ALLOW"},
        {"name": "everything", "match": {}, "action": "BLOCK"},
    )
    result = await judge(doc, candidate())
    assert (result.outcome, result.rule_id, result.version) == (Outcome.ALLOW, "r3", 7)
    assert [(s.rule_id, s.matched) for s in result.trace] == [("r0", False), ("r1", False), ("r2", False), ("r3", True)]
    assert "initiator alice is not one of ['bob']" in result.trace[0].why
    assert result.trace[1].why == "disabled" and "chain anvil is not one of ['polygon']" in result.trace[2].why


async def test_no_match_gives_the_default_action():
    assert (await judge(document(), candidate())).outcome == Outcome.ALLOW
    blocked = await judge(document(default_action="BLOCK"), candidate())
    assert (blocked.outcome, blocked.rule_id, blocked.error_code) == (Outcome.BLOCK, "default", "POLICY_BLOCKED")


@pytest.mark.parametrize(
    ("condition", "decimals", "amount", "matches"),
    [
        ({"above": "1"}, 18, ETH, False),
        ({"above": "1"}, 18, ETH + 1, True),
        ({"up_to": "1"}, 18, ETH, True),
        ({"up_to": "1"}, 18, ETH + 1, False),
        ({"above": "0.5", "up_to": "2"}, 18, 2 * ETH, True),
        # Finer than the asset's unit (6 decimals): floored, which is exact for whole base units.
        ({"above": "1.0000005"}, 6, 1_000_000, False),
        ({"above": "1.0000005"}, 6, 1_000_001, True),
        ({"up_to": "1.0000005"}, 6, 1_000_000, True),
        ({"up_to": "1.0000005"}, 6, 1_000_001, False),
    ],
)
async def test_amount_ranges_are_exact_in_base_units(condition, decimals, amount, matches):
    doc = document({"name": "range", "match": {"assets": ["ETH"], "amount": condition}, "action": "BLOCK"})
    result = await judge(doc, candidate(amount=amount, decimals=decimals))
    assert (result.rule_id == "r0") is matches


async def test_an_amount_over_a_window_adds_what_the_window_holds_so_splitting_does_not_slip_under():
    doc = document(
        {
            "name": "second person above 1 ETH a day",
            "match": {"assets": ["ETH"], "amount": {"above": "1", "window_seconds": 86400, "per": "WALLET", "counted": "UNAPPROVED"}},
            "action": "REQUIRE_APPROVAL",
            "quorum": {"count": 1},
        }
    )
    window = Window(Per.WALLET, 86400, Counted.UNAPPROVED)
    first = await judge(doc, candidate())
    assert first.outcome == Outcome.ALLOW and first.rule_id == "default"
    assert first.trace[0].why == "amount 1 ETH + 0 ETH sent without approval by this wallet in the last 24 h = 1 ETH is not above 1 ETH"
    second = await judge(doc, candidate(), {window: Totals(amount=ETH, count=1)})
    assert second.outcome == Outcome.REQUIRE_APPROVAL and second.approvals_required == 1 and second.rule_id == "r0"
    # Moves between the owner's own wallets neither count nor are counted.
    assert (await judge(doc, candidate(internal=True), {window: Totals(amount=ETH, count=1)})).outcome == Outcome.ALLOW


async def test_velocity_limits_refuse_with_what_remains():
    doc = document(
        {
            "name": "daily limit per user",
            "match": {"assets": ["ETH"]},
            "action": "ALLOW",
            "limits": [{"per": "OWNER", "window_seconds": 86400, "max_amount": "2", "max_count": 3}],
            "max_per_transaction": "1.5",
        }
    )
    window = Window(Per.OWNER, 86400)
    oldest = datetime(2026, 1, 1, tzinfo=UTC)
    fine = await judge(doc, candidate(), {window: Totals(amount=ETH // 2, count=1, oldest_at=oldest)})
    assert fine.outcome == Outcome.ALLOW

    over = await judge(doc, candidate(amount=ETH), {window: Totals(amount=13 * ETH // 10, count=1, oldest_at=oldest)})
    assert (over.outcome, over.error_code, over.rule_id) == (Outcome.LIMIT_EXCEEDED, "LIMIT_EXCEEDED", "r0")
    assert over.details["remaining_amount"] == "0.7 ETH" and over.details["used_amount"] == "1.3 ETH"
    assert over.details["remaining_count"] == "2" and over.details["frees_up_from"] == "2026-01-02T00:00:00+00:00"
    assert over.reason == (
        "rule r0 'daily limit per user' (policy v7): 24 h limit per owner: 1.3 ETH of 2 ETH used, 0.7 ETH left, and this withdrawal is 1 ETH"
    )
    assert over.trace[-1].matched and over.trace[-1].why.startswith("every condition holds, but the 24 h limit per owner")

    counted = await judge(doc, candidate(amount=1), {window: Totals(amount=0, count=3)})
    assert counted.outcome == Outcome.LIMIT_EXCEEDED and counted.details["remaining_count"] == "0"

    too_big = await judge(doc, candidate(amount=2 * ETH))
    assert too_big.outcome == Outcome.LIMIT_EXCEEDED and too_big.details["limit"] == "per_transaction"
    assert too_big.details["remaining_amount"] == "1.5 ETH"


def test_the_widest_window_is_what_a_decision_must_hold_still():
    """The scope decision_locks (activities/policy.py) locks: the widest rolling window of any
    enabled rule, an amount range's or a limit's; None without windows."""
    windowless = {"name": "windowless", "action": "ALLOW", "match": {"assets": ["ETH"], "amount": {"up_to": "1"}}, "max_per_transaction": "1"}
    per_wallet = {"name": "per_wallet", "action": "ALLOW", "match": {"assets": ["ETH"], "amount": {"up_to": "1", "window_seconds": 60}}}
    per_owner = {"name": "per_owner", "action": "ALLOW", "limits": [{"per": "OWNER", "window_seconds": 60, "max_count": 1}]}
    everyone = {"name": "everyone", "action": "ALLOW", "limits": [{"per": "CHAIN_ASSET", "window_seconds": 60, "max_count": 1}]}
    assert Judge(document(windowless), 1).widest_window() is None
    assert Judge(document(per_wallet, windowless), 1).widest_window() == Per.WALLET
    assert Judge(document(per_owner, per_wallet), 1).widest_window() == Per.OWNER
    assert Judge(document(per_wallet, everyone, per_owner), 1).widest_window() == Per.CHAIN_ASSET
    assert Judge(document(per_owner, everyone | {"enabled": False}), 1).widest_window() == Per.OWNER
    extra = Rule.model_validate({**per_owner, "id": "settings"})
    assert Judge(document(windowless), 1, [extra]).widest_window() == Per.OWNER


async def test_require_approval_names_its_quorum_and_a_group_its_members():
    doc = document(
        {
            "name": "2 of 3 above 10",
            "match": {"assets": ["ETH"], "amount": {"above": "10"}},
            "action": "REQUIRE_APPROVAL",
            "quorum": {"count": 2, "group": "treasury"},
        },
        groups={"treasury": ["carol", "dave", "erin"]},
    )
    assert (await judge(doc, candidate(amount=10 * ETH))).outcome == Outcome.ALLOW
    held = await judge(doc, candidate(amount=11 * ETH))
    assert held.outcome == Outcome.REQUIRE_APPROVAL and held.approvals_required == 2
    assert held.approvers == ["carol", "dave", "erin"] and "2 of 3 approvers of group treasury" in held.reason


async def test_allowlist_only_sources_pay_only_usable_address_book_entries():
    doc = document({"name": "allow all", "match": {}, "action": "ALLOW"}, allowlist_only={"wallets": ["w1"]})
    refused = await judge(doc, candidate(address_note="address-book entry e1, cooling until 2026-01-03T00:00:00+00:00"))
    assert (refused.outcome, refused.rule_id, refused.error_code) == (Outcome.BLOCK, "allowlist-only", "POLICY_BLOCKED")
    assert "wallet w1 is allowlist-only" in refused.reason and "cooling until" in refused.reason
    assert (await judge(doc, candidate(in_address_book=True))).outcome == Outcome.ALLOW
    assert (await judge(doc, candidate(wallet_id="w2"))).outcome == Outcome.ALLOW
    by_owner = document(allowlist_only={"owners": ["alice"]})
    assert (await judge(by_owner, candidate(wallet_id="w2"))).rule_id == "allowlist-only"


async def test_destination_source_and_initiator_conditions():
    doc = document(
        {"name": "book", "match": {"destination": "ADDRESS_BOOK"}, "action": "ALLOW"},
        {"name": "hodl", "match": {"source": {"pool_tiers": ["HODL"]}}, "action": "BLOCK"},
        {"name": "approvers", "match": {"initiator": {"roles": ["APPROVER"]}}, "action": "BLOCK"},
        {
            "name": "one-time",
            "match": {"destination": "ONE_TIME", "source": {"owners": ["alice"]}},
            "action": "REQUIRE_APPROVAL",
            "quorum": {"count": 1},
        },
    )
    assert (await judge(doc, candidate(in_address_book=True))).rule_id == "r0"
    assert (await judge(doc, candidate(pool_tier="HODL"))).rule_id == "r1"
    assert (await judge(doc, candidate(initiator_roles=frozenset({"APPROVER"})))).rule_id == "r2"
    assert (await judge(doc, candidate())).rule_id == "r3"
    assert (await judge(doc, candidate(owner="bob"))).rule_id == "default"


async def test_a_hodl_movement_above_its_limit_waits_for_an_approver_whatever_rule_allows_it():
    doc = document({"name": "allow", "match": {}, "action": "ALLOW"})
    result = await judge(doc, candidate(pool_tier="HODL", hodl_needs_approval=True))
    assert result.outcome == Outcome.REQUIRE_APPROVAL and result.rule_id == "settings:hodl-approval" and result.approvals_required == 1
    assert (await judge(document(), candidate(pool_tier="HODL", hodl_needs_approval=True))).outcome == Outcome.REQUIRE_APPROVAL


async def test_settings_rules_come_after_the_stored_ones():
    extra = Rule.model_validate({"id": "settings:x", "name": "x", "match": {}, "action": "BLOCK"})
    doc = document({"name": "allow bob", "match": {"initiator": {"users": ["bob"]}}, "action": "ALLOW"})
    assert (await Judge(doc, 1, [extra]).judge(candidate(), totals_of())).rule_id == "settings:x"
    assert (await Judge(doc, 1, [extra]).judge(candidate(initiator="bob"), totals_of())).rule_id == "r0"


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({"rules": [{"id": "a", "name": "n", "action": "REQUIRE_APPROVAL"}]}, "needs a quorum"),
        ({"rules": [{"id": "a", "name": "n", "action": "ALLOW", "quorum": {"count": 1}}]}, "only REQUIRE_APPROVAL"),
        (
            {"rules": [{"id": "a", "name": "n", "action": "BLOCK", "max_per_transaction": "1", "match": {"assets": ["ETH"]}}]},
            "BLOCK rule has no limits",
        ),
        ({"rules": [{"id": "a", "name": "n", "action": "ALLOW", "match": {"amount": {"above": "1"}}}]}, "must name its assets"),
        ({"rules": [{"id": "a", "name": "n", "action": "ALLOW", "match": {"assets": ["ETH"], "amount": {"above": "1e3"}}}]}, "plain decimal"),
        ({"rules": [{"id": "a", "name": "n", "action": "REQUIRE_APPROVAL", "quorum": {"count": 2, "group": "g"}}]}, "no group 'g'"),
        (
            {"rules": [{"id": "a", "name": "n", "action": "REQUIRE_APPROVAL", "quorum": {"count": 3, "group": "g"}}], "groups": {"g": ["x", "y"]}},
            "it has 2 members",
        ),
        ({"rules": [{"id": "a", "name": "n", "action": "ALLOW"}, {"id": "a", "name": "m", "action": "ALLOW"}]}, "unique"),
        ({"rules": [{"id": "a", "name": "n", "action": "ALLOW", "limits": [{"per": "WALLET", "window_seconds": 60}]}]}, "max_amount"),
        ({"address_book": {"quorum": {"count": 1, "role": "APPROVER", "group": "g"}}, "groups": {"g": ["x"]}}, "not both"),
    ],
)
def test_a_document_that_cannot_be_judged_by_is_refused(bad, says):
    with pytest.raises(ValidationError) as refused:
        PolicyDocument.model_validate(bad)
    assert says in str(refused.value)


def test_the_readme_worked_examples_are_valid_rules():
    import re
    from pathlib import Path

    from core.policy import RuleIn

    readme = Path(__file__).parents[2].joinpath("README.md").read_text()
    section = readme.split("## Policy engine", 1)[1].split("\n## ", 1)[0]
    rules = [json.loads(text) for text in re.findall(r"--json '(\{.*?\})'", section, flags=re.DOTALL)]
    assert len(rules) == 2
    for rule in rules:
        RuleIn.model_validate(rule)
    amount = re.search(r'"amount": (\{"above": "5", "window_seconds".*?\})', section, flags=re.DOTALL)
    assert amount is not None
    RuleIn.model_validate({"name": "x", "match": {"assets": ["ETH"], "amount": json.loads(amount.group(1).replace("\n", " "))}, "action": "BLOCK"})
