"""Judge one withdrawal by a policy document: allowlist-only sources first, then the rules in
order, first match wins (as Fireblocks' TAP does), then the default action. Pure: what the
database knows (address book, initiator's roles, what rolling windows already hold) comes in as
a `Candidate` and a `totals` callback, so the same code decides, re-checks before signing and
explains a dry run (`custody policy test`).

Money stays in base units: a rule's decimal amounts are compared exactly, scaled by the asset's
decimals (a bound finer than the asset's smallest unit is floored, which is exact for integers).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from core.money import to_decimal_string
from core.policy import Action, AmountRange, Counted, Destination, Per, PolicyDocument, Quorum, Rule, VelocityLimit

ALLOWLIST_ONLY_RULE = "allowlist-only"
DEFAULT_RULE = "default"
HODL_RULE = "settings:hodl-approval"


class Outcome:
    ALLOW = "ALLOW"
    REQUIRE_APPROVAL = "REQUIRE_APPROVAL"
    BLOCK = "BLOCK"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    EXEMPT = "EXEMPT"  # custody's own housekeeping (gap fills, trustlines, sweeps): moves no one's money out
    PASSED = (ALLOW, REQUIRE_APPROVAL, EXEMPT)


ERROR_CODE = {Outcome.BLOCK: "POLICY_BLOCKED", Outcome.LIMIT_EXCEEDED: "LIMIT_EXCEEDED"}


@dataclass(frozen=True)
class Candidate:
    """The withdrawal being judged, with what the database knows about it."""

    owner: str
    wallet_id: str
    chain: str
    asset: str
    decimals: int
    amount: int
    initiator: str
    initiator_roles: frozenset[str] = frozenset()
    pool_tier: str | None = None
    # A usable entry of the owner's address book (cooled off or approved by its quorum), and
    # what to say about the destination otherwise ("not in the address book", "cooling until ...").
    in_address_book: bool = False
    address_note: str = ""
    # To another wallet of the same owner: not money leaving the owner, so rolling windows
    # neither count it nor limit it (its own amount still meets amount conditions).
    internal: bool = False
    # A movement out of a pool's HODL key above `hodl_auto_approve_up_to`: an approver, always.
    hodl_needs_approval: bool = False


@dataclass(frozen=True)
class Window:
    per: Per
    seconds: int
    counted: Counted = Counted.ALL


@dataclass(frozen=True)
class Totals:
    """What a window already holds (same chain and asset as the candidate, itself excluded)."""

    amount: int = 0
    count: int = 0
    oldest_at: datetime | None = None


TotalsOf = Callable[[Window], Awaitable[Totals]]
# Narrowest first: a wallet's withdrawals are among its owner's, an owner's among its chain+asset's.
WINDOW_WIDTH = (Per.WALLET, Per.OWNER, Per.CHAIN_ASSET)


@dataclass
class Step:
    rule_id: str
    name: str
    matched: bool
    why: str


@dataclass
class Judgement:
    outcome: str
    rule_id: str
    rule_name: str
    version: int
    reason: str
    quorum: Quorum | None = None
    approvers: list[str] = field(default_factory=list)  # the group's members when the quorum names one
    details: dict[str, str] = field(default_factory=dict)
    trace: list[Step] = field(default_factory=list)

    @property
    def error_code(self) -> str | None:
        return ERROR_CODE.get(self.outcome)

    @property
    def approvals_required(self) -> int:
        return self.quorum.count if self.outcome == Outcome.REQUIRE_APPROVAL and self.quorum else 0


def floor_units(amount: str, decimals: int) -> int:
    """A rule's decimal amount in base units, floored: for an integer x, x > a ⟺ x > floor(a)
    and x ≤ a ⟺ x ≤ floor(a), so comparisons stay exact whatever the bound's precision."""
    whole, _, fraction = amount.partition(".")
    scale = 10 ** len(fraction)
    units: int = (int(whole) * scale + int(fraction or "0")) * 10**decimals // scale  # int ** int is typed Any (negative exponents)
    return units


def window_text(seconds: int) -> str:
    """86400 -> "24 h", 172800 -> "2 d", 90 -> "90 s"."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds % size == 0 and (unit != "d" or seconds >= 2 * 86_400):
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


class Judge:
    def __init__(self, document: PolicyDocument, version: int, extra_rules: list[Rule] | None = None) -> None:
        self.document = document
        self.version = version
        # Rules from settings (CUSTODY_APPROVAL_THRESHOLDS) go after the stored ones.
        self.rules = [*document.rules, *(extra_rules or [])]

    def widest_window(self) -> Per | None:
        """The widest scope any rolling window of these rules adds up (None: no rule has one):
        what a decision must hold still while it reads and then writes a spend."""
        scopes = set()
        for rule in self.rules:
            if not rule.enabled:
                continue
            if rule.match.amount is not None and rule.match.amount.window_seconds is not None:
                scopes.add(rule.match.amount.per)
            scopes.update(limit.per for limit in rule.limits)
        return max(scopes, key=WINDOW_WIDTH.index, default=None)

    async def judge(self, c: Candidate, totals: TotalsOf) -> Judgement:
        trace: list[Step] = []
        listed = self.document.allowlist_only
        if c.wallet_id in listed.wallets or c.owner in listed.owners:
            which = f"wallet {c.wallet_id}" if c.wallet_id in listed.wallets else f"owner {c.owner}"
            if not c.in_address_book:
                why = f"{which} is allowlist-only and the destination is {c.address_note or 'not a usable address-book entry'}"
                trace.append(Step(ALLOWLIST_ONLY_RULE, "allowlist-only sources", True, why))
                return self._result(Outcome.BLOCK, ALLOWLIST_ONLY_RULE, "allowlist-only", why, trace)
            trace.append(
                Step(ALLOWLIST_ONLY_RULE, "allowlist-only sources", False, f"{which} is allowlist-only; the destination is in its address book")
            )
        for rule in self.rules:
            why_not = await self._mismatch(rule, c, totals)
            if why_not is not None:
                trace.append(Step(rule.id, rule.name, False, why_not))
                continue
            trace.append(Step(rule.id, rule.name, True, "every condition holds"))
            return await self._apply(rule, c, totals, trace)
        default = self.document.default_action
        why = "no rule matched: the policy's default action"
        trace.append(Step(DEFAULT_RULE, "default action", True, why))
        return self._hodl(self._result(default, DEFAULT_RULE, "default action", f"{why} ({default})", trace), c)

    # --- matching ------------------------------------------------------------------------------
    async def _mismatch(self, rule: Rule, c: Candidate, totals: TotalsOf) -> str | None:
        """Why `rule` does not match (None: it does)."""
        m = rule.match
        if not rule.enabled:
            return "disabled"
        if m.initiator.users and c.initiator not in m.initiator.users:
            return f"initiator {c.initiator} is not one of {m.initiator.users}"
        if m.initiator.roles and not c.initiator_roles & {r.value for r in m.initiator.roles}:
            return f"initiator {c.initiator} holds none of the roles {[r.value for r in m.initiator.roles]}"
        if m.source.wallets and c.wallet_id not in m.source.wallets:
            return f"source wallet {c.wallet_id} is not one of the rule's wallets"
        if m.source.owners and c.owner not in m.source.owners:
            return f"owner {c.owner} is not one of {m.source.owners}"
        if m.source.pool_tiers and c.pool_tier not in m.source.pool_tiers:
            return f"source is {'a ' + c.pool_tier + ' pool key' if c.pool_tier else 'not a pool key'}, not {m.source.pool_tiers}"
        if m.destination == Destination.ADDRESS_BOOK and not c.in_address_book:
            return f"destination is {c.address_note or 'not a usable address-book entry'}"
        if m.destination == Destination.ONE_TIME and c.in_address_book:
            return "destination is in the owner's address book (the rule is for one-time destinations)"
        if m.chains and c.chain not in m.chains:
            return f"chain {c.chain} is not one of {m.chains}"
        if m.assets and c.asset not in m.assets:
            return f"asset {c.asset} is not one of {m.assets}"
        if m.amount is not None:
            return await self._amount_mismatch(m.amount, c, totals)
        return None

    async def _amount_mismatch(self, r: AmountRange, c: Candidate, totals: TotalsOf) -> str | None:
        judged, said = c.amount, self._money(c.amount, c)
        if r.window_seconds is not None and not c.internal:
            held = await totals(Window(r.per, r.window_seconds, r.counted))
            judged += held.amount
            whose = {Per.WALLET: "this wallet", Per.OWNER: "this owner", Per.CHAIN_ASSET: "everyone"}[r.per]
            unapproved = " without approval" if r.counted == Counted.UNAPPROVED else ""
            said = (
                f"{said} + {self._money(held.amount, c)} sent{unapproved} by {whose} in the last {window_text(r.window_seconds)}"
                f" = {self._money(judged, c)}"
            )
        if r.above is not None and not judged > floor_units(r.above, c.decimals):
            return f"amount {said} is not above {r.above} {c.asset}"
        if r.up_to is not None and not judged <= floor_units(r.up_to, c.decimals):
            return f"amount {said} is above {r.up_to} {c.asset}"
        return None

    # --- the matched rule ----------------------------------------------------------------------
    async def _apply(self, rule: Rule, c: Candidate, totals: TotalsOf, trace: list[Step]) -> Judgement:
        where = f"rule {rule.id} '{rule.name}' (policy v{self.version})"
        if rule.action == Action.BLOCK:
            return self._result(Outcome.BLOCK, rule.id, rule.name, f"{where} blocks this withdrawal", trace)
        if rule.max_per_transaction is not None:
            most = floor_units(rule.max_per_transaction, c.decimals)
            if c.amount > most:
                why = f"at most {self._money(most, c)} per withdrawal; this one is {self._money(c.amount, c)}"
                trace[-1].why = f"every condition holds, but {why}"
                details = {"limit": "per_transaction", "max_amount": self._money(most, c), "remaining_amount": self._money(most, c)}
                return self._result(Outcome.LIMIT_EXCEEDED, rule.id, rule.name, f"{where}: {why}", trace, details=details)
        if not c.internal:
            for limit in rule.limits:
                exceeded = await self._exceeded(limit, c, totals)
                if exceeded is not None:
                    why, details = exceeded
                    trace[-1].why = f"every condition holds, but the {why}"
                    return self._result(Outcome.LIMIT_EXCEEDED, rule.id, rule.name, f"{where}: {why}", trace, details=details)
        if rule.action == Action.REQUIRE_APPROVAL:
            assert rule.quorum is not None
            reason = f"{where} needs {self._quorum_text(rule.quorum)}"
            return self._result(Outcome.REQUIRE_APPROVAL, rule.id, rule.name, reason, trace, quorum=rule.quorum)
        return self._hodl(self._result(Outcome.ALLOW, rule.id, rule.name, f"{where} allows it", trace), c)

    async def _exceeded(self, limit: VelocityLimit, c: Candidate, totals: TotalsOf) -> tuple[str, dict[str, str]] | None:
        held = await totals(Window(limit.per, limit.window_seconds))
        span = f"{window_text(limit.window_seconds)} limit per {limit.per.value.lower().replace('_', '+')}"
        details = {"limit": span, "window_seconds": str(limit.window_seconds), "per": limit.per.value}
        if held.oldest_at is not None:
            details["frees_up_from"] = (held.oldest_at + timedelta(seconds=limit.window_seconds)).isoformat()
        over: list[str] = []
        if limit.max_count is not None:
            left = max(limit.max_count - held.count, 0)
            details |= {"max_count": str(limit.max_count), "used_count": str(held.count), "remaining_count": str(left)}
            if held.count + 1 > limit.max_count:
                over.append(f"{held.count} of {limit.max_count} withdrawals made, {left} left")
        if limit.max_amount is not None:
            most = floor_units(limit.max_amount, c.decimals)
            left = max(most - held.amount, 0)
            details |= {
                "max_amount": self._money(most, c),
                "used_amount": self._money(held.amount, c),
                "remaining_amount": self._money(left, c),
            }
            if held.amount + c.amount > most:
                over.append(
                    f"{self._money(held.amount, c)} of {self._money(most, c)} used, {self._money(left, c)} left, "
                    f"and this withdrawal is {self._money(c.amount, c)}"
                )
        return (f"{span}: {'; '.join(over)}", details) if over else None

    def _hodl(self, judgement: Judgement, c: Candidate) -> Judgement:
        """A HODL movement above its automatic limit always waits for an approver, whatever
        rule let it through (the key pools' own four eyes, settings `hodl_auto_approve_up_to`)."""
        if judgement.outcome != Outcome.ALLOW or not c.hodl_needs_approval:
            return judgement
        judgement.trace.append(Step(HODL_RULE, "HODL movements above hodl_auto_approve_up_to", True, "needs an approver"))
        return self._result(
            Outcome.REQUIRE_APPROVAL,
            HODL_RULE,
            "HODL movement above hodl_auto_approve_up_to",
            f"{judgement.reason}; a HODL movement above its automatic limit needs an approver",
            judgement.trace,
            quorum=Quorum(count=1),
        )

    # --- helpers -------------------------------------------------------------------------------
    def _result(
        self,
        outcome: str,
        rule_id: str,
        name: str,
        reason: str,
        trace: list[Step],
        *,
        quorum: Quorum | None = None,
        details: dict[str, str] | None = None,
    ) -> Judgement:
        approvers = list(self.document.groups.get(quorum.group, [])) if quorum and quorum.group else []
        return Judgement(outcome, rule_id, name, self.version, reason, quorum, approvers, details or {}, trace)

    def _quorum_text(self, quorum: Quorum) -> str:
        if quorum.group:
            return f"{quorum.count} of {len(self.document.groups.get(quorum.group, []))} approvers of group {quorum.group}"
        assert quorum.role is not None
        return f"{quorum.count} approver(s) with role {quorum.role.value}"

    @staticmethod
    def _money(units: int, c: Candidate) -> str:
        return f"{to_decimal_string(units, c.decimals)} {c.asset}"
