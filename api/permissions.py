"""Who may call which route: one table, checked by `api.auth.authorized` for every route that
takes an identity. A route missing from the table is refused (403) for everyone, and a test
fails until it is classified.

A grant is (scope, role, reach): the caller's credential must carry the scope and the user must
hold the role; reach ANY lets them act on anyone's objects (operators, approvers), OWN only on
their own (others' objects answer 404, so ids do not leak).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.identity import Role, Scope


@dataclass(frozen=True)
class Grant:
    scope: Scope
    role: Role
    any_owner: bool = False


PUBLIC = "public"  # no identity: probes, the codec endpoint (its own bearer token)
SIGNED_IN = "signed_in"  # any valid identity, no scope (GET /v1/users/me)

_READ_OWN = Grant(Scope.WALLETS_READ, Role.USER)
_WRITE_WALLETS = Grant(Scope.WALLETS_WRITE, Role.USER)
_WRITE_OWN = Grant(Scope.WITHDRAWALS_WRITE, Role.USER)
_OPERATE = Grant(Scope.OPERATIONS, Role.OPERATOR, any_owner=True)
_APPROVE = Grant(Scope.WITHDRAWALS_APPROVE, Role.APPROVER, any_owner=True)
_READ_ANY = (Grant(Scope.WALLETS_READ, Role.OPERATOR, any_owner=True), Grant(Scope.WALLETS_READ, Role.APPROVER, any_owner=True))
_ADMIN = Grant(Scope.ADMIN, Role.ADMIN, any_owner=True)

PERMISSIONS: dict[str, str | tuple[Grant, ...]] = {
    # health and the Temporal UI's codec endpoint
    "GET /live": PUBLIC,
    "GET /ready": PUBLIC,
    "GET /health": (_OPERATE,),
    "GET /metrics": (_OPERATE,),
    "POST /codec/encode": PUBLIC,
    "POST /codec/decode": PUBLIC,
    # users
    "GET /v1/users/me": SIGNED_IN,
    # wallets (owners only; operators manage pools and channels, not users' wallets)
    "POST /v1/wallets": (_WRITE_WALLETS,),
    "GET /v1/wallets": (_READ_OWN,),
    "GET /v1/wallets/{wallet_id}": (_READ_OWN,),
    "GET /v1/wallets/{wallet_id}/balances": (_READ_OWN,),
    "POST /v1/wallets/{wallet_id}/activate": (_WRITE_WALLETS,),
    "POST /v1/wallets/{wallet_id}/deactivate": (_WRITE_WALLETS,),
    "POST /v1/wallets/{wallet_id}/fund": (_WRITE_WALLETS,),
    "POST /v1/wallets/{wallet_id}/trustlines": (_WRITE_WALLETS,),
    # withdrawals
    "POST /v1/withdrawals": (_WRITE_OWN,),
    "GET /v1/withdrawals": (_READ_OWN, *_READ_ANY),
    "GET /v1/withdrawals/{withdrawal_id}": (_READ_OWN, *_READ_ANY),
    "POST /v1/withdrawals/{withdrawal_id}/pause": (_WRITE_OWN, _OPERATE),
    "POST /v1/withdrawals/{withdrawal_id}/resume": (_WRITE_OWN, _OPERATE),
    "POST /v1/withdrawals/{withdrawal_id}/cancel": (_WRITE_OWN, _OPERATE),
    "POST /v1/withdrawals/{withdrawal_id}/retry": (_WRITE_OWN, _OPERATE),
    "POST /v1/withdrawals/{withdrawal_id}/approve": (_APPROVE,),
    "POST /v1/withdrawals/{withdrawal_id}/reject": (_APPROVE,),
    "POST /v1/withdrawals/pause-all": (_OPERATE,),
    "POST /v1/withdrawals/resume-all": (_OPERATE,),
    # operators
    "GET /v1/admin/stats": (_OPERATE,),
    "GET /v1/admin/reconciliation/{chain}": (_OPERATE,),
    "POST /v1/admin/reconciliation/{chain}/runs": (_OPERATE,),
    "GET /v1/pools/{chain}": (_OPERATE,),
    "POST /v1/pools/{chain}/explorers/lease": (_OPERATE,),
    "POST /v1/pools/{chain}/explorers/{lease_id}/withdrawals": (_OPERATE,),
    "POST /v1/pools/{chain}/explorers/{lease_id}/return": (_OPERATE,),
    "POST /v1/pools/{chain}/rebalance": (_OPERATE,),
    "GET /v1/channels/{chain}": (_OPERATE,),
    "POST /v1/channels/{chain}/sync": (_OPERATE,),
    # webhooks: owners register endpoints; operators read anyone's deliveries and redeliver
    "POST /v1/webhooks": (_WRITE_WALLETS,),
    "GET /v1/webhooks": (_READ_OWN, _OPERATE),
    "GET /v1/webhooks/{webhook_id}": (_READ_OWN, _OPERATE),
    "DELETE /v1/webhooks/{webhook_id}": (_WRITE_WALLETS,),
    "GET /v1/webhooks/{webhook_id}/deliveries": (_READ_OWN, _OPERATE),
    "GET /v1/webhooks/deliveries/{delivery_id}": (_READ_OWN, _OPERATE),
    "POST /v1/webhooks/deliveries/{delivery_id}/redeliver": (_WRITE_WALLETS, _OPERATE),
    # the audit log: administrators
    "GET /v1/audit": (_ADMIN,),
    "GET /v1/audit/verify": (_ADMIN,),
    # the policy engine: admins change it; operators read it and dry-run it
    "GET /v1/policy": (_ADMIN, _OPERATE),
    "PUT /v1/policy": (_ADMIN,),
    "GET /v1/policy/versions": (_ADMIN, _OPERATE),
    "GET /v1/policy/versions/{version}": (_ADMIN, _OPERATE),
    "POST /v1/policy/rules": (_ADMIN,),
    "PUT /v1/policy/rules/{rule_id}": (_ADMIN,),
    "DELETE /v1/policy/rules/{rule_id}": (_ADMIN,),
    "POST /v1/policy/test": (_ADMIN, _OPERATE),
    # address books: owners keep theirs; approvers (and operators) read anyone's, approvers approve
    "GET /v1/address-book": (_READ_OWN, *_READ_ANY),
    "POST /v1/address-book": (_WRITE_WALLETS,),
    "DELETE /v1/address-book/{entry_id}": (_WRITE_WALLETS,),
    "POST /v1/address-book/{entry_id}/approve": (_APPROVE,),
    # admins
    "GET /v1/admin/api-keys": (_ADMIN,),
    "POST /v1/admin/api-keys": (_ADMIN,),
    "POST /v1/admin/api-keys/{key_id}/revoke": (_ADMIN,),
    "GET /v1/admin/users": (_ADMIN,),
    "GET /v1/admin/users/{user_id}": (_ADMIN,),
    "PUT /v1/admin/users/{user_id}": (_ADMIN,),
    "POST /v1/admin/users/{user_id}/block": (_ADMIN,),
    "POST /v1/admin/users/{user_id}/unblock": (_ADMIN,),
    "POST /v1/admin/wallets/{wallet_id}/freeze": (_ADMIN,),
    "POST /v1/admin/wallets/{wallet_id}/unfreeze": (_ADMIN,),
}

# Stricter buckets on top of the per-identity and per-IP ones (api/ratelimit.py).
EXTRA_BUCKETS: dict[str, str] = {"POST /v1/wallets": "wallet_creation"}
