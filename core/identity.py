"""Who is calling: an identity (a user id, their roles, the scopes of the credential used) and
the role and scope vocabulary. Roles belong to users; scopes narrow what one API key may do.

Workflow-safe (no I/O, no heavy imports): activities and, later, policy rules match on these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Role(str, Enum):
    USER = "USER"  # own wallets and withdrawals
    APPROVER = "APPROVER"  # second person on withdrawals above a threshold (never their own)
    OPERATOR = "OPERATOR"  # pause / resume / cancel anyone's withdrawals, pools, channels, stats
    ADMIN = "ADMIN"  # API keys, users (blocks, roles), wallet freezes


class Scope(str, Enum):
    WALLETS_READ = "wallets:read"
    WALLETS_WRITE = "wallets:write"
    WITHDRAWALS_WRITE = "withdrawals:write"
    WITHDRAWALS_APPROVE = "withdrawals:approve"
    OPERATIONS = "operations"
    ADMIN = "admin"


# What each role can use at all: an API key gets at most the scopes of its owner's roles, and an
# OIDC token (which carries roles, not scopes) gets exactly these.
ROLE_SCOPES: dict[Role, frozenset[Scope]] = {
    Role.USER: frozenset({Scope.WALLETS_READ, Scope.WALLETS_WRITE, Scope.WITHDRAWALS_WRITE}),
    Role.APPROVER: frozenset({Scope.WALLETS_READ, Scope.WITHDRAWALS_APPROVE}),
    Role.OPERATOR: frozenset({Scope.WALLETS_READ, Scope.OPERATIONS}),
    Role.ADMIN: frozenset({Scope.ADMIN}),
}


def scopes_of(roles: frozenset[Role] | set[Role]) -> frozenset[Scope]:
    return frozenset(s for r in roles for s in ROLE_SCOPES[r])


def parse_roles(values: object) -> frozenset[Role]:
    """Known role names among `values` (case-insensitive); unknown names are ignored."""
    names = {str(v).upper() for v in values} if isinstance(values, (list, tuple, set, frozenset)) else set()
    return frozenset(r for r in Role if r.value in names)


@dataclass(frozen=True)
class Identity:
    """The caller of one request. `id` is a user id: it owns wallets and withdrawals and is the
    `by` of every action recorded for them."""

    id: str
    roles: frozenset[Role]
    scopes: frozenset[Scope]
    via: str  # "api_key:<prefix>" | "oidc:<issuer>"
    # The credential's own subject: the API key's id, or the token's `sub` (OIDC users are bound
    # to (issuer, sub) on their first GET /v1/users/me).
    subject: str | None = None
    ip: str | None = None
    blocked: bool = False
    # Filled per route by the permission check: True when the caller acts on anyone's objects
    # (an operator's or approver's grant), False when only on their own.
    any_owner: bool = field(default=False, compare=False)

    def can(self, scope: Scope, role: Role) -> bool:
        return scope in self.scopes and role in self.roles

    @property
    def role_names(self) -> list[str]:
        return sorted(r.value for r in self.roles)
