"""Ledger entries (accounts, trustlines, data), a key/value store and nested transactions over it.

Entries are frozen dataclasses, changed with ``dataclasses.replace``; a :class:`Txn` layers
updates over its parent (the store or another Txn) like stellar-core's LedgerTxn, so an
operation can be rolled back by dropping its Txn and its ledger-entry changes (for the
transaction meta) are the difference between the Txn and its parent.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from stellar_sdk import xdr as x

from .codec import AssetKey, str_to_account_id, str_to_signer_key

# Account flags (AccountFlags) and trustline flags (TrustLineFlags).
AUTH_REQUIRED = 0x1
AUTH_REVOCABLE = 0x2
AUTH_IMMUTABLE = 0x4
AUTH_CLAWBACK_ENABLED = 0x8
ACCOUNT_FLAGS_MASK = 0xF

TL_AUTHORIZED = 0x1
TL_AUTHORIZED_TO_MAINTAIN_LIABILITIES = 0x2
TL_CLAWBACK_ENABLED = 0x4
TL_FLAGS_MASK = 0x7


@dataclass(frozen=True)
class Signer:
    key: str  # strkey: G... (ed25519), T... (pre-auth tx), X... (sha256 hash)
    weight: int


@dataclass(frozen=True)
class Account:
    account_id: str
    balance: int
    seq_num: int
    num_sub_entries: int = 0
    flags: int = 0
    home_domain: str = ""
    master_weight: int = 1
    low_threshold: int = 0
    med_threshold: int = 0
    high_threshold: int = 0
    signers: tuple[Signer, ...] = ()
    inflation_dest: str | None = None
    seq_ledger: int = 0
    seq_time: int = 0
    last_modified: int = 0


@dataclass(frozen=True)
class TrustLine:
    account_id: str
    asset: AssetKey
    balance: int
    limit: int
    flags: int = TL_AUTHORIZED
    last_modified: int = 0


@dataclass(frozen=True)
class DataEntry:
    account_id: str
    name: str
    value: bytes
    last_modified: int = 0


Entry = Account | TrustLine | DataEntry
# ("account", G) | ("trustline", G, code, issuer) | ("data", G, name)
Key = tuple


def account_key(account_id: str) -> Key:
    return ("account", account_id)


def trustline_key(account_id: str, asset: AssetKey) -> Key:
    return ("trustline", account_id, asset.code, asset.issuer)


def data_key(account_id: str, name: str) -> Key:
    return ("data", account_id, name)


def key_of(entry: Entry) -> Key:
    if isinstance(entry, Account):
        return account_key(entry.account_id)
    if isinstance(entry, TrustLine):
        return trustline_key(entry.account_id, entry.asset)
    return data_key(entry.account_id, entry.name)


_DELETED = object()


class Store:
    """The committed state: entries by key, plus an index of the keys owned by each account."""

    def __init__(self) -> None:
        self._entries: dict[Key, Entry] = {}
        self._by_account: dict[str, set[Key]] = {}

    def get(self, key: Key) -> Entry | None:
        return self._entries.get(key)

    def set(self, key: Key, entry: Entry | None) -> None:
        owner = key[1]
        if entry is None:
            if self._entries.pop(key, None) is not None:
                owned = self._by_account.get(owner)
                if owned is not None:
                    owned.discard(key)
                    if not owned:
                        del self._by_account[owner]
            return
        self._entries[key] = entry
        self._by_account.setdefault(owner, set()).add(key)

    def owned_by(self, account_id: str) -> list[Entry]:
        return [self._entries[k] for k in sorted(self._by_account.get(account_id, ()))]

    def __len__(self) -> int:
        return len(self._entries)


class Txn:
    """Updates layered over a parent Store or Txn; ``commit`` pushes them down one level."""

    def __init__(self, parent: Store | Txn, ledger_seq: int) -> None:
        self.parent = parent
        self.ledger_seq = ledger_seq
        self._updates: dict[Key, object] = {}

    def get(self, key: Key) -> Entry | None:
        if key in self._updates:
            value = self._updates[key]
            return None if value is _DELETED else value  # type: ignore[return-value]
        return self.parent.get(key)

    def put(self, entry: Entry) -> Entry:
        entry = replace(entry, last_modified=self.ledger_seq)
        self._updates[key_of(entry)] = entry
        return entry

    def delete(self, key: Key) -> None:
        self._updates[key] = _DELETED

    def child(self) -> Txn:
        return Txn(self, self.ledger_seq)

    def changes(self) -> list[tuple[Key, Entry | None, Entry | None]]:
        """(key, value in parent, value here) for every touched key that really changed."""
        out = []
        for key, value in self._updates.items():
            new = None if value is _DELETED else value
            old = self.parent.get(key)
            if old is None and new is None:
                continue
            if old == new:
                continue
            out.append((key, old, new))
        return out

    def commit(self) -> None:
        for key, value in self._updates.items():
            new = None if value is _DELETED else value
            if isinstance(self.parent, Txn):
                if new is None:
                    self.parent.delete(key)
                else:
                    self.parent._updates[key] = new
            else:
                self.parent.set(key, new)  # type: ignore[arg-type]
        self._updates.clear()

    def touched_keys(self) -> Iterable[Key]:
        return self._updates.keys()

    # Convenience accessors
    def account(self, account_id: str) -> Account | None:
        return self.get(account_key(account_id))  # type: ignore[return-value]

    def trustline(self, account_id: str, asset: AssetKey) -> TrustLine | None:
        return self.get(trustline_key(account_id, asset))  # type: ignore[return-value]

    def data(self, account_id: str, name: str) -> DataEntry | None:
        return self.get(data_key(account_id, name))  # type: ignore[return-value]


# ------------------------------------------------------------------ XDR


def _account_entry_xdr(a: Account) -> x.AccountEntry:
    signers = [x.Signer(str_to_signer_key(s.key), x.Uint32(s.weight)) for s in a.signers]
    v3 = x.AccountEntryExtensionV3(ext=x.ExtensionPoint(0), seq_ledger=x.Uint32(a.seq_ledger), seq_time=x.TimePoint(x.Uint64(a.seq_time)))
    v2 = x.AccountEntryExtensionV2(
        num_sponsored=x.Uint32(0),
        num_sponsoring=x.Uint32(0),
        signer_sponsoring_i_ds=[x.SponsorshipDescriptor(None) for _ in a.signers],
        ext=x.AccountEntryExtensionV2Ext(3, v3=v3),
    )
    v1 = x.AccountEntryExtensionV1(
        liabilities=x.Liabilities(x.Int64(0), x.Int64(0)),
        ext=x.AccountEntryExtensionV1Ext(2, v2=v2),
    )
    return x.AccountEntry(
        account_id=str_to_account_id(a.account_id),
        balance=x.Int64(a.balance),
        seq_num=x.SequenceNumber(x.Int64(a.seq_num)),
        num_sub_entries=x.Uint32(a.num_sub_entries),
        inflation_dest=str_to_account_id(a.inflation_dest) if a.inflation_dest else None,
        flags=x.Uint32(a.flags),
        home_domain=x.String32(a.home_domain.encode()),
        thresholds=x.Thresholds(bytes([a.master_weight, a.low_threshold, a.med_threshold, a.high_threshold])),
        signers=signers,
        ext=x.AccountEntryExt(1, v1=v1),
    )


def ledger_entry_xdr(entry: Entry) -> x.LedgerEntry:
    if isinstance(entry, Account):
        data = x.LedgerEntryData(x.LedgerEntryType.ACCOUNT, account=_account_entry_xdr(entry))
    elif isinstance(entry, TrustLine):
        data = x.LedgerEntryData(
            x.LedgerEntryType.TRUSTLINE,
            trust_line=x.TrustLineEntry(
                account_id=str_to_account_id(entry.account_id),
                asset=entry.asset.to_trustline_asset(),
                balance=x.Int64(entry.balance),
                limit=x.Int64(entry.limit),
                flags=x.Uint32(entry.flags),
                ext=x.TrustLineEntryExt(0),
            ),
        )
    else:
        data = x.LedgerEntryData(
            x.LedgerEntryType.DATA,
            data=x.DataEntry(
                account_id=str_to_account_id(entry.account_id),
                data_name=x.String64(entry.name.encode()),
                data_value=x.DataValue(entry.value),
                ext=x.DataEntryExt(0),
            ),
        )
    return x.LedgerEntry(x.Uint32(entry.last_modified), data, x.LedgerEntryExt(0))


def ledger_key_xdr(key: Key) -> x.LedgerKey:
    kind = key[0]
    if kind == "account":
        return x.LedgerKey(x.LedgerEntryType.ACCOUNT, account=x.LedgerKeyAccount(str_to_account_id(key[1])))
    if kind == "trustline":
        asset = AssetKey(key[2], key[3])
        return x.LedgerKey(
            x.LedgerEntryType.TRUSTLINE,
            trust_line=x.LedgerKeyTrustLine(str_to_account_id(key[1]), asset.to_trustline_asset()),
        )
    return x.LedgerKey(
        x.LedgerEntryType.DATA,
        data=x.LedgerKeyData(str_to_account_id(key[1]), x.String64(key[2].encode())),
    )


def changes_xdr(changes: Iterable[tuple[Key, Entry | None, Entry | None]]) -> x.LedgerEntryChanges:
    """stellar-core's STATE/UPDATED, CREATED and STATE/REMOVED change pairs."""
    out: list[x.LedgerEntryChange] = []
    T = x.LedgerEntryChangeType
    for key, old, new in changes:
        if old is None and new is not None:
            out.append(x.LedgerEntryChange(T.LEDGER_ENTRY_CREATED, created=ledger_entry_xdr(new)))
        elif old is not None and new is None:
            out.append(x.LedgerEntryChange(T.LEDGER_ENTRY_STATE, state=ledger_entry_xdr(old)))
            out.append(x.LedgerEntryChange(T.LEDGER_ENTRY_REMOVED, removed=ledger_key_xdr(key)))
        elif old is not None and new is not None:
            out.append(x.LedgerEntryChange(T.LEDGER_ENTRY_STATE, state=ledger_entry_xdr(old)))
            out.append(x.LedgerEntryChange(T.LEDGER_ENTRY_UPDATED, updated=ledger_entry_xdr(new)))
    return x.LedgerEntryChanges(out)


@dataclass
class ChangeLog:
    """Changes collected while applying one transaction (for meta and participants)."""

    fee: list = field(default_factory=list)
    before: list = field(default_factory=list)
    ops: list[list] = field(default_factory=list)

    def all_accounts(self) -> Iterator[str]:
        for group in (self.fee, self.before, *self.ops):
            for key, _old, _new in group:
                yield key[1]
