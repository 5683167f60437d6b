"""The policy document: ordered rules, approver groups, allowlist-only sources and address-book
settings. Pure vocabulary (pydantic, no I/O): the API validates what admins send with it, the
store keeps it as JSON, the engine (core/policy_engine.py) judges withdrawals by it.

A rule matches on who initiated (user ids, roles), the source (wallets, owners, key-pool tiers),
the destination (ANY, ADDRESS_BOOK: a usable entry of the owner's address book, ONE_TIME: any
other), chains, assets and an amount range, optionally over a rolling window. Its action is
ALLOW, BLOCK or REQUIRE_APPROVAL with a quorum (N approvers with a role, or N members of a named
group; the requester and the owner never count). ALLOW and REQUIRE_APPROVAL rules may carry
velocity limits (amount and count over rolling windows per wallet, owner or chain+asset) and a
hard per-transaction maximum. Amounts are decimal strings in the unit of the withdrawal's asset,
the edge's format; the engine turns them into base units with that asset's decimals.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.identity import Role

_DECIMAL = re.compile(r"(0|[1-9][0-9]{0,77})(\.[0-9]{1,36})?")
Amount = str  # a plain decimal string, e.g. "1.5"
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}$"


def _amount(value: str | None) -> str | None:
    if value is not None and not _DECIMAL.fullmatch(value):
        raise ValueError('amounts are plain decimal strings such as "1.25"')
    return value


class Action(str, Enum):
    ALLOW = "ALLOW"
    BLOCK = "BLOCK"
    REQUIRE_APPROVAL = "REQUIRE_APPROVAL"


class Destination(str, Enum):
    ANY = "ANY"
    ADDRESS_BOOK = "ADDRESS_BOOK"  # a usable (cooled-off or quorum-approved) entry of the owner's address book
    ONE_TIME = "ONE_TIME"  # anything else


class Per(str, Enum):
    """What a rolling window adds up: the same wallet's, owner's, or everyone's withdrawals (of
    the same chain and asset as the one judged)."""

    WALLET = "WALLET"
    OWNER = "OWNER"
    CHAIN_ASSET = "CHAIN_ASSET"


class Counted(str, Enum):
    ALL = "ALL"  # every withdrawal the policy let through (approved or not)
    UNAPPROVED = "UNAPPROVED"  # only those that went without an approval: "at most X a day without a second person"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Quorum(_Strict):
    """N approvers: holders of `role` (default APPROVER), or members of `group`. They must be
    neither the owner nor the requester, and (to call approve at all) hold the APPROVER role."""

    count: int = Field(ge=1, le=20)
    role: Role | None = None
    group: str | None = Field(default=None, pattern=NAME)

    @model_validator(mode="after")
    def _one_kind(self) -> Quorum:
        if self.role is not None and self.group is not None:
            raise ValueError("a quorum names a role or a group, not both")
        if self.group is None and self.role is None:
            self.role = Role.APPROVER
        return self


class AmountRange(_Strict):
    """above < amount <= up_to (either bound optional). With `window_seconds`, the amount judged
    is this withdrawal's plus what the window already holds (`per`, `counted`): splitting a
    withdrawal does not slip under the range."""

    above: Amount | None = None
    up_to: Amount | None = None
    window_seconds: int | None = Field(default=None, ge=1, le=366 * 86_400)
    per: Per = Per.WALLET
    counted: Counted = Counted.ALL

    @field_validator("above", "up_to")
    @classmethod
    def _amounts(cls, value: str | None) -> str | None:
        return _amount(value)

    @model_validator(mode="after")
    def _bounded(self) -> AmountRange:
        if self.above is None and self.up_to is None:
            raise ValueError("an amount range needs `above`, `up_to` or both")
        return self


class Initiator(_Strict):
    users: list[str] = Field(default_factory=list, max_length=200)
    roles: list[Role] = Field(default_factory=list, max_length=4)


class Source(_Strict):
    wallets: list[str] = Field(default_factory=list, max_length=500)
    owners: list[str] = Field(default_factory=list, max_length=500)
    pool_tiers: list[Literal["HODL", "BANK", "EXPLORER"]] = Field(default_factory=list, max_length=3)


class Match(_Strict):
    """Every given condition must hold (an empty list matches anything)."""

    initiator: Initiator = Field(default_factory=Initiator)
    source: Source = Field(default_factory=Source)
    destination: Destination = Destination.ANY
    chains: list[str] = Field(default_factory=list, max_length=50)
    assets: list[str] = Field(default_factory=list, max_length=50)
    amount: AmountRange | None = None

    @field_validator("chains")
    @classmethod
    def _lower(cls, chains: list[str]) -> list[str]:
        return [c.lower() for c in chains]


class VelocityLimit(_Strict):
    """At most `max_amount` and/or `max_count` withdrawals in any `window_seconds`, counting the
    one judged, per wallet, owner or chain+asset (same chain and asset)."""

    per: Per
    window_seconds: int = Field(ge=1, le=366 * 86_400)
    max_amount: Amount | None = None
    max_count: int | None = Field(default=None, ge=1)

    @field_validator("max_amount")
    @classmethod
    def _amounts(cls, value: str | None) -> str | None:
        return _amount(value)

    @model_validator(mode="after")
    def _something(self) -> VelocityLimit:
        if self.max_amount is None and self.max_count is None:
            raise ValueError("a limit needs `max_amount`, `max_count` or both")
        return self


class RuleIn(_Strict):
    """A rule as an admin writes it; the store gives it an id."""

    name: str = Field(min_length=1, max_length=200)
    enabled: bool = True
    match: Match = Field(default_factory=Match)
    action: Action
    quorum: Quorum | None = None
    limits: list[VelocityLimit] = Field(default_factory=list, max_length=10)
    max_per_transaction: Amount | None = None

    @field_validator("max_per_transaction")
    @classmethod
    def _amounts(cls, value: str | None) -> str | None:
        return _amount(value)

    @model_validator(mode="after")
    def _consistent(self) -> RuleIn:
        if (self.action == Action.REQUIRE_APPROVAL) != (self.quorum is not None):
            raise ValueError("REQUIRE_APPROVAL needs a quorum, and only REQUIRE_APPROVAL has one")
        if self.action == Action.BLOCK and (self.limits or self.max_per_transaction):
            raise ValueError("a BLOCK rule has no limits: it lets nothing through")
        uses_amounts = self.match.amount is not None or self.max_per_transaction or any(limit.max_amount for limit in self.limits)
        if uses_amounts and not self.match.assets:
            raise ValueError("a rule with amounts must name its assets (amounts are in the asset's unit)")
        return self


class Rule(RuleIn):
    id: str = Field(pattern=NAME)


class AllowlistOnly(_Strict):
    """Sources that may pay only usable address-book entries of their owner."""

    owners: list[str] = Field(default_factory=list, max_length=1000)
    wallets: list[str] = Field(default_factory=list, max_length=1000)


class AddressBookSettings(_Strict):
    """A new entry is usable after `cooling_seconds`, or at once when `quorum` approves it."""

    cooling_seconds: int = Field(default=48 * 3600, ge=0, le=366 * 86_400)
    quorum: Quorum = Field(default_factory=lambda: Quorum(count=2, role=Role.APPROVER))


class PolicyDocument(_Strict):
    rules: list[Rule] = Field(default_factory=list, max_length=500)
    groups: dict[str, list[str]] = Field(default_factory=dict, max_length=100)
    allowlist_only: AllowlistOnly = Field(default_factory=AllowlistOnly)
    address_book: AddressBookSettings = Field(default_factory=AddressBookSettings)
    # When no rule matches. ALLOW keeps custody's behaviour without rules; BLOCK is a deny-by-default policy.
    default_action: Literal["ALLOW", "BLOCK"] = "ALLOW"

    @model_validator(mode="after")
    def _coherent(self) -> PolicyDocument:
        ids = [r.id for r in self.rules]
        if len(ids) != len(set(ids)):
            raise ValueError("rule ids must be unique")
        for name, members in self.groups.items():
            if not re.fullmatch(NAME, name):
                raise ValueError(f"group name {name!r} is not a valid name")
            if not members or len(set(members)) != len(members):
                raise ValueError(f"group {name!r} needs distinct members")
        quorums = [(f"rule {r.id}", r.quorum) for r in self.rules if r.quorum] + [("address_book", self.address_book.quorum)]
        for where, quorum in quorums:
            if quorum.group is None:
                continue
            group_members = self.groups.get(quorum.group)
            if group_members is None:
                raise ValueError(f"{where}: no group {quorum.group!r}")
            if len(group_members) < quorum.count:
                raise ValueError(f"{where}: {quorum.count} of group {quorum.group!r} asked, it has {len(group_members)} members")
        return self

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)
