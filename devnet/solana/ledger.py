"""The chain model around LiteSVM: slots, block heights, the recent-blockhash window, commitment and history.

LiteSVM executes transactions for real (sigverify on, SPL Token / Token-2022 / ATA / Memo loaded) but has no
notion of slots, blocks or a blockhash queue: it accepts only its latest blockhash and its clock starts at 0.
This module supplies what a validator's bank adds on top:

* one block per slot; every slot rotates the blockhash (``svm.expire_blockhash()``) and sets the Clock sysvar;
* a blockhash queue: a blockhash registered at block height ``h`` is valid while the bank's block height is
  ``<= h + 150`` (its ``lastValidBlockHeight``); LiteSVM's own blockhash check is turned off and this window
  is checked here instead, before the transaction reaches the SVM;
* a status cache and transaction history, so an identical transaction never applies twice;
* banks per commitment: ``processed`` = tip, ``confirmed`` = tip - confirmation_depth,
  ``finalized`` = tip - finalization_depth (32). Account state is always read from the tip (see limits);
* with a :class:`~devnet.solana.persistence.LedgerStore`, every new slot and every landed transaction is
  saved before it is served, and a ledger built on the same store continues that chain (see ``_restore``).

Everything here is synchronous and must be called from one thread (the server's event loop).
"""

from __future__ import annotations

import math
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from solders.account import Account
from solders.address_lookup_table_account import AddressLookupTable
from solders.clock import Clock
from solders.hash import Hash
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message, MessageV0, from_bytes_versioned, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import (
    SimulatedTransactionInfo,
    TransactionMetadata,
)
from solders.transaction_status import TransactionErrorFieldless, UiTransactionTokenBalance

from .persistence import Genesis, LedgerStore, SavedLedger, Tip, landed_fields, landed_record
from .tokens import TOKEN_PROGRAMS, decode_mint, decode_token_account, ui_token_amount

MAX_PROCESSING_AGE = 150
MAX_RECENT_BLOCKHASHES = 300
DEFAULT_FINALIZATION_DEPTH = 32
DEFAULT_SLOT_MS = 400
LAMPORTS_PER_SIGNATURE = 5_000
MAX_COMPUTE_UNIT_LIMIT = 1_400_000
DEFAULT_INSTRUCTION_COMPUTE_UNIT_LIMIT = 200_000
MAX_BUILTIN_ALLOCATION_COMPUTE_UNIT_LIMIT = 3_000
PRIORITIZATION_FEE_CACHE_SLOTS = 150
FAUCET_LAMPORTS = 500_000_000 * 1_000_000_000

COMPUTE_BUDGET_PROGRAM_ID = Pubkey.from_string("ComputeBudget111111111111111111111111111111")
NATIVE_LOADER_ID = Pubkey.from_string("NativeLoader1111111111111111111111111111111")
_PRECOMPILES = {
    Pubkey.from_string("Ed25519SigVerify111111111111111111111111111"),
    Pubkey.from_string("KeccakSecp256k11111111111111111111111111111"),
    Pubkey.from_string("Secp256r1SigVerify1111111111111111111111111"),
}
COMMITMENTS = ("processed", "confirmed", "finalized")


@dataclass(frozen=True)
class Bank:
    """The view a commitment level sees: its slot and block height."""

    slot: int
    block_height: int


@dataclass
class ComputeBudget:
    price_micro_lamports: int
    limit: int

    @property
    def prioritization_fee(self) -> int:
        return math.ceil(self.price_micro_lamports * self.limit / 1_000_000)


@dataclass
class LandedTx:
    """A transaction that made it into a block (successful or failed; either way it paid its fee)."""

    signature: Signature
    slot: int
    block_time: int
    tx: VersionedTransaction
    account_keys: list[Pubkey]
    loaded_writable: list[Pubkey]
    loaded_readonly: list[Pubkey]
    err: Any  # solders TransactionErrorType or None
    fee: int
    logs: list[str]
    compute_units: int
    inner_instructions: list[Any]
    return_data: Any
    pre_balances: list[int]
    post_balances: list[int]
    pre_token_balances: list[UiTransactionTokenBalance]
    post_token_balances: list[UiTransactionTokenBalance]
    index_in_slot: int


@dataclass
class SimOutcome:
    """Result of a simulation: ``err`` is a solders TransactionError or None."""

    err: Any
    logs: list[str]
    units_consumed: int
    return_data: Any = None
    inner_instructions: list[Any] | None = None
    post_accounts: dict[Pubkey, Account] = field(default_factory=dict)
    fee: int | None = None


@dataclass
class _SlotFees:
    min_fee: int | None = None
    by_account: dict[Pubkey, int] = field(default_factory=dict)


class Ledger:
    """LiteSVM plus the slot / blockhash / commitment model of a validator bank."""

    def __init__(
        self,
        *,
        slot_ms: int = DEFAULT_SLOT_MS,
        finalization_depth: int = DEFAULT_FINALIZATION_DEPTH,
        confirmation_depth: int = 0,
        store: LedgerStore | None = None,
    ) -> None:
        if finalization_depth < 1 or not 0 <= confirmation_depth <= finalization_depth:
            raise ValueError("need 0 <= confirmation_depth <= finalization_depth and finalization_depth >= 1")
        # LiteSVM would accept only its single latest blockhash; the 150-block window is enforced here.
        self.svm = LiteSVM().with_blockhash_check(False)
        if not self.svm.get_sigverify():
            raise RuntimeError("LiteSVM signature verification must be on")
        self.finalization_depth = finalization_depth
        self.confirmation_depth = confirmation_depth
        self.slot_ms = slot_ms
        self.store = store
        self._hash_height: dict[Hash, int] = {}
        self._height_hash: dict[int, Hash] = {}
        self._unsaved_blockhashes: list[tuple[int, Hash]] = []
        self.landed: dict[Signature, LandedTx] = {}
        self._by_address: dict[Pubkey, list[Signature]] = {}
        self._slot_tx_count: dict[int, int] = {}
        self._slot_fees: dict[int, _SlotFees] = {}
        self._builtin_cache: dict[Pubkey, bool] = {}
        self.transaction_count = 0
        self.drop_next_sends = 0
        self.holding = False
        self.held: list[VersionedTransaction] = []
        self.lost: list[Signature] = []
        self.dropped: list[tuple[Signature, str]] = []
        saved = store.load() if store is not None else None
        if saved is not None:
            self._restore(saved)
            return
        clock = self.svm.get_clock()
        self.genesis_slot = clock.slot
        self.slot = clock.slot
        # As on mainnet, block height trails the slot (skipped slots); afterwards both advance one per slot.
        self.block_height = clock.slot - clock.slot // 20
        self.genesis_unix = int(time.time())
        self.genesis_hash = self.svm.latest_blockhash()
        self.faucet = Keypair()
        if store is not None:
            store.start_over(Genesis(self.genesis_slot, self.genesis_unix, self.genesis_hash, bytes(self.faucet)))
        self._register_blockhash()
        self.set_account(self.faucet.pubkey(), Account(FAUCET_LAMPORTS, b"", SYSTEM_PROGRAM_ID, False, 2**64 - 1))
        # Start like a running cluster: enough history that the finalized bank exists.
        self.advance(finalization_depth + 1)

    def _restore(self, saved: SavedLedger) -> None:
        """Continue the saved chain: same genesis and faucet, same tip, recent blockhashes, accounts, history."""
        genesis = saved.genesis
        if self.svm.latest_blockhash() != genesis.hash:
            raise RuntimeError(
                f"{self.store.path if self.store else 'the state'} was written with another LiteSVM (its genesis "
                "blockhash differs); remove it to start a new chain"
            )
        self.genesis_slot, self.genesis_unix, self.genesis_hash = genesis.slot, genesis.unix, genesis.hash
        self.faucet = Keypair.from_bytes(genesis.faucet_secret)
        # LiteSVM derives each blockhash from the previous one, from a constant genesis: a fresh SVM would issue
        # the saved chain's blockhashes again, making long-expired transactions valid again. Replaying one
        # rotation per slot puts it where the saved chain stopped, so new slots issue blockhashes never seen.
        for _ in range(saved.tip.slot - genesis.slot):
            self.svm.expire_blockhash()
        self.slot, self.block_height = saved.tip.slot, saved.tip.block_height
        if saved.blockhashes.get(self.block_height) != self.svm.latest_blockhash():
            raise RuntimeError("the saved tip blockhash does not follow from the genesis blockhash; state is corrupt")
        for height, blockhash in saved.blockhashes.items():
            self._hash_height[blockhash] = height
            self._height_hash[height] = blockhash
        for pubkey, account in saved.accounts.items():
            self.svm.set_account(pubkey, account)
        for record in saved.landed:
            self._remember(LandedTx(**landed_fields(record)))
        self._prune()
        self._sync_clock()

    def _save(self, **changes: Any) -> None:
        if self.store is not None:
            self.store.commit(**changes)

    def _account_states(self, keys: list[Pubkey]) -> list[tuple[Pubkey, Account | None]]:
        """What to save of these accounts: their state now (None: gone). Programs are the SVM's own and stay."""
        out: list[tuple[Pubkey, Account | None]] = []
        for key in dict.fromkeys(keys):
            account = self.svm.get_account(key)
            if account is not None and account.executable:
                continue
            out.append((key, None if account is None or account.lamports == 0 else account))
        return out

    def set_account(self, pubkey: Pubkey, account: Account) -> None:
        """Write an account directly (genesis faucet, ``devnet_setAccount``)."""
        self.svm.set_account(pubkey, account)
        self._save(accounts=[(pubkey, account)])

    # ----------------------------------------------------------------- time
    def _register_blockhash(self) -> None:
        bh = self.svm.latest_blockhash()
        self._hash_height[bh] = self.block_height
        self._height_hash[self.block_height] = bh
        if self.store is not None:
            self._unsaved_blockhashes.append((self.block_height, bh))

    def advance(self, count: int = 1) -> None:
        """Produce ``count`` blocks: new slot, new block height, new blockhash, clock moved forward.

        Saved before it returns, i.e. before any reader can see the new slot: a restarted devnet never
        goes back to a slot, block height or blockhash window that was already served.
        """
        for _ in range(count):
            self.slot += 1
            self.block_height += 1
            self.svm.expire_blockhash()
            self._register_blockhash()
        self._prune()
        self._sync_clock()
        new, self._unsaved_blockhashes = self._unsaved_blockhashes, []
        self._save(
            tip=Tip(self.slot, self.block_height),
            new_blockhashes=new,
            forget_blockhashes_below=self._keep_blockhashes_from(),
        )

    def expire_all_blockhashes(self) -> None:
        """Advance until every blockhash handed out so far is past its lastValidBlockHeight, even as seen by the
        finalized bank (finalized block height > lastValidBlockHeight is what proves a transaction dead)."""
        newest_last_valid = self.block_height + MAX_PROCESSING_AGE
        self.advance(newest_last_valid + self.finalization_depth + 1 - self.block_height)

    def unix_time_at(self, slot: int) -> int:
        slot_ms = self.slot_ms or DEFAULT_SLOT_MS
        return self.genesis_unix + (slot - self.genesis_slot) * slot_ms // 1000

    def _sync_clock(self) -> None:
        schedule = self.svm.get_epoch_schedule()
        epoch, _ = schedule.get_epoch_and_slot_index(self.slot)
        self.svm.set_clock(
            Clock(
                self.slot,
                self.genesis_unix,
                epoch,
                schedule.get_leader_schedule_epoch(self.slot),
                self.unix_time_at(self.slot),
            )
        )

    def _keep_blockhashes_from(self) -> int:
        return self.block_height - MAX_RECENT_BLOCKHASHES - self.finalization_depth

    def _prune(self) -> None:
        keep_from = self._keep_blockhashes_from()
        for height in [h for h in self._height_hash if h < keep_from]:
            self._hash_height.pop(self._height_hash.pop(height), None)
        fee_from = self.slot - PRIORITIZATION_FEE_CACHE_SLOTS - self.finalization_depth
        for slot in [s for s in self._slot_fees if s < fee_from]:
            del self._slot_fees[slot]

    # ---------------------------------------------------------- commitment
    def bank(self, commitment: str = "finalized") -> Bank:
        lag = {"processed": 0, "confirmed": self.confirmation_depth, "finalized": self.finalization_depth}[commitment]
        return Bank(self.slot - lag, self.block_height - lag)

    def latest_blockhash(self, bank: Bank) -> tuple[Hash, int]:
        return self._height_hash[bank.block_height], bank.block_height + MAX_PROCESSING_AGE

    def blockhash_valid(self, blockhash: Hash, bank: Bank) -> bool:
        height = self._hash_height.get(blockhash)
        return height is not None and height <= bank.block_height <= height + MAX_PROCESSING_AGE

    def commitment_of(self, slot: int) -> str:
        age = self.slot - slot
        if age >= self.finalization_depth:
            return "finalized"
        if age >= self.confirmation_depth:
            return "confirmed"
        return "processed"

    def visible(self, landed: LandedTx, commitment: str) -> bool:
        return COMMITMENTS.index(self.commitment_of(landed.slot)) >= COMMITMENTS.index(commitment)

    # ------------------------------------------------------------- checks
    def _nonce_matches(self, tx: VersionedTransaction) -> bool:
        message = tx.message
        instruction = message.instructions[0]
        if not instruction.accounts:
            return False
        account = self.svm.get_account(message.account_keys[instruction.accounts[0]])
        if account is None or account.owner != SYSTEM_PROGRAM_ID or len(account.data) < 72:
            return False
        _version, state = struct.unpack_from("<II", bytes(account.data), 0)
        return state == 1 and bytes(account.data)[40:72] == bytes(message.recent_blockhash)

    def check_age_and_status(self, tx: VersionedTransaction, bank: Bank) -> Any:
        """The bank's checks before execution: blockhash age (or durable nonce), then the status cache."""
        if not self.blockhash_valid(tx.message.recent_blockhash, bank):
            if not (tx.uses_durable_nonce() and self._nonce_matches(tx)):
                return TransactionErrorFieldless.BlockhashNotFound
        landed = self.landed.get(tx.signatures[0])
        if landed is not None and landed.slot <= bank.slot:
            return TransactionErrorFieldless.AlreadyProcessed
        return None

    # --------------------------------------------------------------- keys
    def resolve_keys(self, tx: VersionedTransaction) -> tuple[list[Pubkey], list[Pubkey], list[Pubkey]]:
        """Static keys, then addresses loaded from lookup tables (writable, readonly)."""
        message = tx.message
        static = list(message.account_keys)
        writable: list[Pubkey] = []
        readonly: list[Pubkey] = []
        if isinstance(message, MessageV0):
            for lookup in message.address_table_lookups:
                account = self.svm.get_account(lookup.account_key)
                if account is None:
                    continue
                try:
                    addresses = AddressLookupTable.deserialize(bytes(account.data)).addresses
                    writable += [addresses[i] for i in bytes(lookup.writable_indexes)]
                    readonly += [addresses[i] for i in bytes(lookup.readonly_indexes)]
                except Exception:
                    continue
        return static + writable + readonly, writable, readonly

    @staticmethod
    def writable_keys(tx: VersionedTransaction, loaded_writable: list[Pubkey]) -> list[Pubkey]:
        message = tx.message
        header = message.header
        keys = list(message.account_keys)
        n_signed = header.num_required_signatures
        out = []
        for i, key in enumerate(keys):
            if i < n_signed:
                if i < n_signed - header.num_readonly_signed_accounts:
                    out.append(key)
            elif i < len(keys) - header.num_readonly_unsigned_accounts:
                out.append(key)
        return out + list(loaded_writable)

    # ---------------------------------------------------------------- fees
    def _is_builtin(self, program_id: Pubkey) -> bool:
        cached = self._builtin_cache.get(program_id)
        if cached is None:
            account = self.svm.get_account(program_id)
            cached = account is not None and account.owner == NATIVE_LOADER_ID and program_id not in _PRECOMPILES
            self._builtin_cache[program_id] = cached
        return cached

    def compute_budget(self, message: Message | MessageV0) -> ComputeBudget:
        keys = list(message.account_keys)
        price = 0
        limit: int | None = None
        default_limit = 0
        for instruction in message.instructions:
            program_id = keys[instruction.program_id_index]
            data = bytes(instruction.data)
            if program_id == COMPUTE_BUDGET_PROGRAM_ID:
                if data[:1] == b"\x02" and len(data) >= 5:
                    limit = struct.unpack_from("<I", data, 1)[0]
                elif data[:1] == b"\x03" and len(data) >= 9:
                    price = struct.unpack_from("<Q", data, 1)[0]
            if self._is_builtin(program_id):
                default_limit += MAX_BUILTIN_ALLOCATION_COMPUTE_UNIT_LIMIT
            else:
                default_limit += DEFAULT_INSTRUCTION_COMPUTE_UNIT_LIMIT
        effective = min(limit if limit is not None else default_limit, MAX_COMPUTE_UNIT_LIMIT)
        return ComputeBudget(price, effective)

    def fee_for_message(self, message: Message | MessageV0) -> int:
        budget = self.compute_budget(message)
        return LAMPORTS_PER_SIGNATURE * message.header.num_required_signatures + budget.prioritization_fee

    def recent_prioritization_fees(self, accounts: list[Pubkey]) -> list[tuple[int, int]]:
        first = max(self.genesis_slot + 1, self.slot - PRIORITIZATION_FEE_CACHE_SLOTS + 1)
        out = []
        for slot in range(first, self.slot + 1):
            fees = self._slot_fees.get(slot)
            fee = 0
            if fees is not None:
                fee = fees.min_fee or 0
                for account in accounts:
                    if account in fees.by_account:
                        fee = max(fee, fees.by_account[account])
            out.append((slot, fee))
        return out

    # ------------------------------------------------------------ accounts
    def lamports(self, pubkey: Pubkey) -> int:
        return self.svm.get_balance(pubkey) or 0

    def account(self, pubkey: Pubkey) -> Account | None:
        account = self.svm.get_account(pubkey)
        if account is None or (account.lamports == 0 and not account.data):
            return None
        return account

    def mint_decimals(self, mint: Pubkey) -> int | None:
        account = self.svm.get_account(mint)
        if account is None:
            return None
        decoded = decode_mint(account.owner, bytes(account.data))
        return None if decoded is None else decoded.decimals

    def token_balances(self, keys: list[Pubkey]) -> list[UiTransactionTokenBalance]:
        out = []
        for index, key in enumerate(keys):
            account = self.svm.get_account(key)
            if account is None or account.owner not in TOKEN_PROGRAMS:
                continue
            token = decode_token_account(account.owner, bytes(account.data))
            if token is None:
                continue
            decimals = self.mint_decimals(token.mint)
            if decimals is None:
                continue
            out.append(UiTransactionTokenBalance(index, token.mint, ui_token_amount(token.amount, decimals), token.owner, account.owner))
        return out

    # ---------------------------------------------------------- execution
    def simulate(self, tx: VersionedTransaction, *, sigverify: bool, bank: Bank) -> SimOutcome:
        """What the bank at ``bank`` would do with ``tx``, without committing anything."""
        err = self.check_age_and_status(tx, bank)
        if err is not None:
            return SimOutcome(err, [], 0)
        if not sigverify:
            self.svm.with_sigverify(False)
        try:
            result = self.svm.simulate_transaction(tx)
        finally:
            if not sigverify:
                self.svm.with_sigverify(True)
        if isinstance(result, SimulatedTransactionInfo):
            meta = result.meta()
            return SimOutcome(
                None,
                list(meta.logs()),
                meta.compute_units_consumed(),
                meta.return_data(),
                list(meta.inner_instructions()),
                dict(result.post_accounts()),
                meta.fee(),
            )
        meta = result.meta()
        return SimOutcome(
            result.err(),
            list(meta.logs()),
            meta.compute_units_consumed(),
            meta.return_data(),
            list(meta.inner_instructions()),
            {},
            meta.fee() or None,
        )

    def submit(self, tx: VersionedTransaction) -> None:
        """The path after the RPC accepted a transaction: maybe lost, maybe held, else processed."""
        if self.drop_next_sends > 0:
            self.drop_next_sends -= 1
            self.lost.append(tx.signatures[0])
            return
        if self.holding:
            self.held.append(tx)
            return
        self.process(tx)

    def release_held(self) -> list[tuple[Signature, bool]]:
        held, self.held, self.holding = self.held, [], False
        return [(tx.signatures[0], self.process(tx) is not None) for tx in held]

    def process(self, tx: VersionedTransaction) -> LandedTx | None:
        """Execute ``tx`` in the current slot. Returns the landed record, or None if the leader dropped it."""
        signature = tx.signatures[0]
        bank = self.bank("processed")
        err = self.check_age_and_status(tx, bank)
        if err is not None or signature in self.landed:
            self.dropped.append((signature, str(err or "AlreadyProcessed")))
            return None
        keys, loaded_writable, loaded_readonly = self.resolve_keys(tx)
        pre_balances = [self.lamports(k) for k in keys]
        pre_token_balances = self.token_balances(keys)
        result = self.svm.send_transaction(tx)
        if isinstance(result, TransactionMetadata):
            meta, tx_err = result, None
        else:
            meta, tx_err = result.meta(), result.err()
            if self.svm.get_transaction(signature) is None:
                # Failed before the fee was charged (sigverify, fee payer, lookup tables...): never lands.
                self.dropped.append((signature, str(tx_err)))
                return None
        index = self._slot_tx_count.get(self.slot, 0)
        self._slot_tx_count[self.slot] = index + 1
        landed = LandedTx(
            signature=signature,
            slot=self.slot,
            block_time=self.unix_time_at(self.slot),
            tx=tx,
            account_keys=keys,
            loaded_writable=loaded_writable,
            loaded_readonly=loaded_readonly,
            err=tx_err,
            fee=meta.fee(),
            logs=list(meta.logs()),
            compute_units=meta.compute_units_consumed(),
            inner_instructions=list(meta.inner_instructions()),
            return_data=meta.return_data(),
            pre_balances=pre_balances,
            post_balances=[self.lamports(k) for k in keys],
            pre_token_balances=pre_token_balances,
            post_token_balances=self.token_balances(keys),
            index_in_slot=index,
        )
        self._remember(landed)
        self._save(accounts=self._account_states(self.writable_keys(tx, loaded_writable)), landed=landed_record(landed))
        return landed

    def _remember(self, landed: LandedTx) -> None:
        """Index a landed transaction: status cache, history by address, per-slot count and fees."""
        self.landed[landed.signature] = landed
        self.transaction_count += 1
        self._slot_tx_count[landed.slot] = max(self._slot_tx_count.get(landed.slot, 0), landed.index_in_slot + 1)
        for key in dict.fromkeys(landed.account_keys):
            self._by_address.setdefault(key, []).append(landed.signature)
        if landed.slot < self.slot - PRIORITIZATION_FEE_CACHE_SLOTS - self.finalization_depth:
            return  # older than the prioritization-fee cache (only when restoring)
        price = self.compute_budget(landed.tx.message).price_micro_lamports
        fees = self._slot_fees.setdefault(landed.slot, _SlotFees())
        fees.min_fee = price if fees.min_fee is None else min(fees.min_fee, price)
        for key in self.writable_keys(landed.tx, landed.loaded_writable):
            fees.by_account[key] = min(fees.by_account.get(key, price), price)

    def airdrop(self, to: Pubkey, lamports: int) -> Signature:
        """A faucet transfer signed with the tip blockhash and sent without preflight, like the test validator's."""
        blockhash, _ = self.latest_blockhash(self.bank("processed"))
        message = Message.new_with_blockhash(
            [transfer(TransferParams(from_pubkey=self.faucet.pubkey(), to_pubkey=to, lamports=lamports))],
            self.faucet.pubkey(),
            blockhash,
        )
        tx = VersionedTransaction(message, [self.faucet])
        self.process(tx)
        return tx.signatures[0]

    def signatures_for_address(self, address: Pubkey) -> list[Signature]:
        return self._by_address.get(address, [])


def replace_blockhash(tx: VersionedTransaction, blockhash: Hash) -> VersionedTransaction:
    """``tx`` with its message's recent blockhash swapped (signatures kept, so they no longer verify)."""
    raw = bytearray(to_bytes_versioned(tx.message))
    offset = 1 if isinstance(tx.message, MessageV0) else 0
    offset += 3  # header
    n_keys, width = _read_shortvec(raw, offset)
    offset += width + 32 * n_keys
    raw[offset : offset + 32] = bytes(blockhash)
    return VersionedTransaction.populate(from_bytes_versioned(bytes(raw)), list(tx.signatures))


def _read_shortvec(buf: bytes | bytearray, offset: int) -> tuple[int, int]:
    value = 0
    for i in range(3):
        byte = buf[offset + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, i + 1
    raise ValueError("bad compact-u16")
