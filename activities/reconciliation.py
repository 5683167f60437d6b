"""Reconciliation activities (ReconciliationWorkflow): each chain's own record against the
database's view of it. Three idempotent steps; chain specifics stay behind chains.base.ChainHistory.

1. `discover`: transfers into or out of our accounts since the last checkpoint that are none of
   our attempts (deposits from outside, faucet funding, spends from our keys), stored together
   with the new cursors, one bounded chunk per transaction, so a retry resumes where it stopped.
2. `verify_completed`: each COMPLETED withdrawal's transaction re-read until it is final. One
   that vanished (or failed) gets an event in the withdrawal's history, a metric and an error log.
3. `report`: per wallet and configured asset,

       expected = deposits + internal credits - withdrawn - fees - side costs

   deposits: found on chain (step 1); internal credits: COMPLETED withdrawals of ours paying one of
   our wallets; withdrawn: what COMPLETED withdrawals moved; fees: what every landed transaction of
   ours cost its fee payer (the wallet, or the Stellar channel account that was the transaction's
   source), fee-only outcomes (reverted, cancelled by replacement) included; side costs: what the
   chain charged beyond amount and fee (Solana rent of recipients' token accounts). Spends from our
   keys that no withdrawal explains are listed and *not* subtracted: they show as drift too.
   Withdrawals still in flight may or may not have moved the balance: a difference they can explain
   is IN_FLIGHT, not drift. EVM reads everything at one final block (HistoryPoint); Solana and
   Stellar read their latest state, so a difference is read twice before it counts.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlmodel import col, select
from temporalio import activity

from activities.locks import advisory_lock
from chains.base import Chain, ChainHistory, HistoryChunk, HistoryPoint
from chains.registry import ChainRegistry
from core import metrics
from core.settings import ReconciliationSettings
from db.engine import SessionFactory
from models.db import TransferAttempt, Wallet, Withdrawal, WithdrawalEvent, utcnow
from models.payloads import (
    FINAL_STATUSES,
    DiscoveryResult,
    ReconciliationResult,
    ReconciliationStep,
    VerificationResult,
    WithdrawalStatus,
)
from models.reconciliation import (
    ChainTransfer,
    CheckState,
    ReconciliationCheck,
    ReconciliationCursor,
    ReconciliationEvent,
    ReconciliationReport,
)

log = logging.getLogger(__name__)

FINAL = {s.value for s in FINAL_STATUSES}
ALERT_STATES = (CheckState.MISSING, CheckState.FAILED)
# The withdrawal alert code of a COMPLETED withdrawal whose transaction the chain no longer shows as done.
VANISHED_ALERT = {CheckState.MISSING: "COMPLETED_TX_MISSING", CheckState.FAILED: "COMPLETED_TX_FAILED"}
IN_QUERY = 1000  # hashes per `IN (...)` lookup
BALANCE_READS = 8  # concurrent balance reads against the node


@dataclass
class _Line:
    """The database's side of one (account, asset) row, in base units."""

    deposits: int = 0
    internal_in: int = 0
    withdrawn: int = 0
    fees: int = 0
    side_costs: int = 0
    in_flight_out: int = 0  # the most withdrawals still in flight can take out
    in_flight_in: int = 0  # the most in-flight withdrawals of ours can pay in

    @property
    def expected(self) -> int:
        return self.deposits + self.internal_in - self.withdrawn - self.fees - self.side_costs

    def touched(self) -> bool:
        return any((self.deposits, self.internal_in, self.withdrawn, self.fees, self.side_costs, self.in_flight_out, self.in_flight_in))


def _status_of(difference: int, line: _Line) -> str:
    if difference == 0:
        return "OK"
    if (line.in_flight_out or line.in_flight_in) and -line.in_flight_out <= difference <= line.in_flight_in:
        return "IN_FLIGHT"
    return "DRIFT"


class ReconciliationActivities:
    def __init__(self, sessions: SessionFactory, chains: ChainRegistry, settings: ReconciliationSettings) -> None:
        self._sessions = sessions
        self._chains = chains
        self._settings = settings
        self._drift_labels: dict[str, set[tuple[str, str]]] = {}

    def _history(self, chain_name: str) -> tuple[Chain, ChainHistory]:
        chain = self._chains.get(chain_name)
        return chain, cast(ChainHistory, chain)

    # --- 1. discovery ------------------------------------------------------------------------
    def _ours(self, chain_name: str):  # type: ignore[no-untyped-def]
        async def ours(hashes: Sequence[str]) -> set[str]:
            found: set[str] = set()
            unique = sorted(set(hashes))
            async with self._sessions() as session:
                for i in range(0, len(unique), IN_QUERY):
                    rows = await session.exec(
                        select(TransferAttempt.tx_hash).where(
                            TransferAttempt.chain == chain_name, col(TransferAttempt.tx_hash).in_(unique[i : i + IN_QUERY])
                        )
                    )
                    found.update(rows.all())
            return found

        return ours

    async def _wallets(self, chain_name: str) -> list[Wallet]:
        async with self._sessions() as session:
            rows = await session.exec(
                select(Wallet).where(Wallet.chain == chain_name, col(Wallet.address).is_not(None)).order_by(col(Wallet.created_at))
            )
            return list(rows.all())

    async def _discover_to(self, chain_name: str, point: HistoryPoint) -> DiscoveryResult:
        """Discovery up to `point`, chunk by chunk, each stored with its cursors."""
        _, history = self._history(chain_name)
        wallets = await self._wallets(chain_name)
        result = DiscoveryResult(chain=chain_name)
        if not wallets:
            return result
        accounts = [w.address for w in wallets if w.address]
        since = wallets[0].created_at
        while True:
            async with self._sessions() as session:
                rows = await session.exec(select(ReconciliationCursor).where(ReconciliationCursor.chain == chain_name))
                cursors = {r.scope: r.cursor for r in rows.all()}
            chunk = await history.discover_transfers(accounts, cursors, point, since, self._ours(chain_name))
            deposits, unexplained = await self._store(chain_name, chunk)
            result.deposits += deposits
            result.unexplained += unexplained
            activity.heartbeat(f"{result.deposits} deposits, {result.unexplained} unexplained")
            if chunk.done:
                return result

    async def _store(self, chain_name: str, chunk: HistoryChunk) -> tuple[int, int]:
        table = ChainTransfer.__table__  # type: ignore[attr-defined]  # set by SQLModel's metaclass, not declared in its stubs
        inserted: list[str] = []
        async with self._sessions() as session, session.begin():
            await advisory_lock(session, "reconciliation", chain_name)
            if chunk.rewind_to_block is not None:
                # A reorg replaced blocks already scanned: what was seen there is re-read.
                await session.exec(
                    sa.delete(ChainTransfer).where(col(ChainTransfer.chain) == chain_name, col(ChainTransfer.block_number) >= chunk.rewind_to_block)
                )
                log.warning("reorg below the discovery cursor: rescanning", extra={"chain": chain_name, "from_block": chunk.rewind_to_block})
            if chunk.transfers:
                now = utcnow()
                values = [
                    {
                        "chain": chain_name,
                        "tx_hash": t.tx_hash,
                        "account": t.account,
                        "asset": t.asset,
                        "direction": t.direction,
                        "amount": t.amount,
                        "fee": t.fee,
                        "event_key": t.event_key,
                        "counterparty": t.counterparty,
                        "sequence": t.sequence,
                        "block_number": t.block_number,
                        "block_hash": t.block_hash,
                        "detail": t.detail,
                        "observed_at": now,
                    }
                    for t in chunk.transfers
                ]
                statement = pg_insert(table).values(values).on_conflict_do_nothing(constraint="uq_chain_transfers_event").returning(table.c.direction)
                inserted = list((await session.exec(statement)).scalars().all())
            for scope, cursor in chunk.cursors.items():
                upsert = pg_insert(ReconciliationCursor.__table__).values(  # type: ignore[attr-defined]  # __table__: SQLModel's metaclass
                    chain=chain_name, scope=scope, cursor=cursor, updated_at=utcnow()
                )
                await session.exec(
                    upsert.on_conflict_do_update(
                        index_elements=["chain", "scope"], set_={"cursor": upsert.excluded.cursor, "updated_at": upsert.excluded.updated_at}
                    )
                )
        return inserted.count("IN"), inserted.count("OUT")

    @activity.defn(name="discover_chain_transfers")
    async def discover(self, step: ReconciliationStep) -> DiscoveryResult:
        """Transfers into and out of our accounts since the last checkpoint, from the chain."""
        _, history = self._history(step.chain)
        result = await self._discover_to(step.chain, await history.history_point())
        if result.unexplained:
            log.error("spends from custody keys that no withdrawal explains", extra={"chain": step.chain, "count": result.unexplained})
        return result

    # --- 2. COMPLETED withdrawals, re-verified until final ----------------------------------
    @activity.defn(name="verify_completed_withdrawals")
    async def verify_completed(self, step: ReconciliationStep) -> VerificationResult:
        """Every COMPLETED withdrawal not yet verified final: is its transaction still on the
        canonical chain and successful? A vanished one is alerted (withdrawal ALERT event, once
        per change of state; the metric; an error log on every run)."""
        _, history = self._history(step.chain)
        async with self._sessions() as session:
            rows = await session.exec(
                select(Withdrawal, Wallet, ReconciliationCheck)
                .join(Wallet, col(Wallet.id) == col(Withdrawal.wallet_id))
                .join(ReconciliationCheck, col(ReconciliationCheck.withdrawal_id) == col(Withdrawal.id), isouter=True)
                .where(
                    Withdrawal.chain == step.chain,
                    Withdrawal.status == WithdrawalStatus.COMPLETED.value,
                    col(Withdrawal.tx_hash).is_not(None),
                    sa.or_(col(ReconciliationCheck.state).is_(None), col(ReconciliationCheck.state) != CheckState.FINAL),
                )
                .order_by(col(Withdrawal.completed_at))
            )
            pending = list(rows.all())
        result = VerificationResult(chain=step.chain)
        for withdrawal, wallet, previous in pending:
            assert withdrawal.tx_hash is not None
            check = await history.recheck_landed(withdrawal.tx_hash, withdrawal.block_number, self._settings.reorg_depth_blocks)
            side_cost = previous.side_cost if previous is not None else None
            if side_cost is None and check.state in (CheckState.FINAL, CheckState.NOT_FINAL) and wallet.address:
                side_cost = await history.side_costs(withdrawal.tx_hash, wallet.address)
            await self._record_check(withdrawal, check.state, check.detail, side_cost)
            result.checked += 1
            result.final += check.state == CheckState.FINAL
            if check.state in ALERT_STATES:
                result.vanished.append(withdrawal.id)
            activity.heartbeat(result.checked)
        metrics.RECONCILIATION_VANISHED.labels(chain=step.chain).set(len(result.vanished))
        return result

    async def _record_check(self, withdrawal: Withdrawal, state: str, detail: str, side_cost: int | None) -> None:
        assert withdrawal.tx_hash is not None
        now = utcnow()
        async with self._sessions() as session, session.begin():
            row = await session.get(ReconciliationCheck, withdrawal.id, with_for_update=True)
            changed = row is None or row.state != state
            if row is None:
                row = ReconciliationCheck(withdrawal_id=withdrawal.id, chain=withdrawal.chain, tx_hash=withdrawal.tx_hash, state=state)
            row.state, row.detail, row.side_cost, row.checked_at = state, detail, side_cost, now
            row.tx_hash = withdrawal.tx_hash
            session.add(row)
            alert = changed and state in ALERT_STATES
            if alert:
                # An alert in the withdrawal's own history, like the withdrawal's own alerts.
                session.add(
                    WithdrawalEvent(
                        withdrawal_id=withdrawal.id,
                        status="ALERT",
                        detail={"code": VANISHED_ALERT[state], "message": f"{withdrawal.tx_hash}: {detail}"},
                    )
                )
        if alert:
            metrics.WITHDRAWAL_ALERTS.labels(chain=withdrawal.chain, code=VANISHED_ALERT[state]).inc()
        if state in ALERT_STATES:
            log.error(
                "COMPLETED withdrawal's transaction is not on the chain as completed",
                extra={"withdrawal_id": withdrawal.id, "chain": withdrawal.chain, "tx_hash": withdrawal.tx_hash, "state": state, "detail": detail},
            )

    # --- 3. the report -----------------------------------------------------------------------
    @activity.defn(name="report_reconciliation")
    async def report(self, step: ReconciliationStep) -> ReconciliationResult:
        """Balances on chain against the database's view, vanished withdrawals and unexplained
        spends: stored as the run's report (keyed by the run), with events for what is new."""
        chain, history = self._history(step.chain)
        for _attempt in (1, 2):
            point = await history.history_point()
            await self._discover_to(step.chain, point)
            wallets = await self._wallets(step.chain)
            lines = await self._database_view(step.chain, chain, history, wallets, point)
            rows = await self._rows(chain, history, wallets, lines, point)
            if point.block_number is not None or all(r["status"] != "DRIFT" for r in rows):
                break
            # Latest-state reads: a transfer landing between the balance and history reads shows
            # as a difference once; a real drift is still there on a second read.
            activity.heartbeat("re-reading a difference")
        unexplained = await self._unexplained(step.chain, history, wallets, point)
        vanished = await self._vanished(step.chain)
        checks = await self._check_counts(step.chain)
        drifting = [r for r in rows if r["status"] == "DRIFT"]
        status = "OK" if not drifting and not vanished and not unexplained else "MISMATCH"
        summary = {
            "wallets": len(wallets),
            "rows": len(rows),
            "drifting": len(drifting),
            "in_flight": sum(r["status"] == "IN_FLIGHT" for r in rows),
            "vanished": len(vanished),
            "unexplained": len(unexplained),
            "checks": checks,
        }
        point_json = {"block_number": point.block_number, "block_hash": point.block_hash} if point.block_number is not None else {}
        report_id = await self._save(step, status, point_json, rows, vanished, unexplained, summary)
        self._export_metrics(step.chain, chain, rows, vanished, unexplained, status)
        return ReconciliationResult(
            chain=step.chain,
            run_key=step.run_key,
            report_id=report_id,
            status=status,
            rows=len(rows),
            drifting=len(drifting),
            in_flight=summary["in_flight"],
            vanished=[v["withdrawal_id"] for v in vanished],
            unexplained=len(unexplained),
        )

    async def _database_view(
        self, chain_name: str, chain: Chain, history: ChainHistory, wallets: list[Wallet], point: HistoryPoint
    ) -> dict[tuple[str, str], _Line]:
        native = chain.settings.native_symbol
        by_id = {w.id: w for w in wallets}
        ours = {w.address for w in wallets if w.address}
        lines: dict[tuple[str, str], _Line] = {}

        def line(account: str, asset: str) -> _Line:
            return lines.setdefault((account, asset), _Line())

        def account_of(destination: str) -> str | None:
            try:
                account = history.account_of(destination)
            except Exception:  # noqa: BLE001 - a destination another chain format cannot be ours
                return None
            return account if account in ours else None

        async with self._sessions() as session:
            deposits = await session.exec(
                sa.select(ChainTransfer.account, ChainTransfer.asset, sa.func.sum(ChainTransfer.amount))  # type: ignore[call-overload]
                .where(
                    ChainTransfer.chain == chain_name,
                    ChainTransfer.direction == "IN",
                    sa.true() if point.block_number is None else col(ChainTransfer.block_number) <= point.block_number,
                )
                .group_by(ChainTransfer.account, ChainTransfer.asset)
            )
            for account, asset, amount in deposits.all():
                line(account, asset).deposits += int(amount)
            withdrawals = list((await session.exec(select(Withdrawal).where(Withdrawal.chain == chain_name))).all())
            # The attempt that landed (its fee payer) and every attempt of those still in flight.
            attempts = await session.exec(
                select(TransferAttempt).where(
                    TransferAttempt.chain == chain_name,
                    col(TransferAttempt.withdrawal_id).in_(
                        select(Withdrawal.id).where(Withdrawal.chain == chain_name, col(Withdrawal.status).not_in(sorted(FINAL)))
                    )
                    | col(TransferAttempt.tx_hash).in_(
                        select(Withdrawal.tx_hash).where(Withdrawal.chain == chain_name, col(Withdrawal.fee_paid).is_not(None))
                    ),
                )
            )
            by_withdrawal: dict[str, list[TransferAttempt]] = {}
            landed: dict[str, TransferAttempt] = {}
            for attempt in attempts.all():
                by_withdrawal.setdefault(attempt.withdrawal_id, []).append(attempt)
                landed[attempt.tx_hash] = attempt
            checks = await session.exec(select(ReconciliationCheck).where(ReconciliationCheck.chain == chain_name))
            checked = {c.withdrawal_id: c for c in checks.all()}
        # COMPLETED since the verify step ran: their side costs are read now (the next run's
        # verify step stores them).
        side_costs = {w_id: c.side_cost for w_id, c in checked.items()}
        for w in withdrawals:
            wallet = by_id.get(w.wallet_id)
            if w.status == WithdrawalStatus.COMPLETED.value and w.id not in checked and w.tx_hash and wallet and wallet.address:
                side_costs[w.id] = await history.side_costs(w.tx_hash, wallet.address)

        for w in withdrawals:
            wallet = by_id.get(w.wallet_id)
            if wallet is None or wallet.address is None:
                continue
            sender = wallet.address
            destination = account_of(w.destination)
            check = checked.get(w.id)
            # Landed after the block this run reads at: not in its balances yet, like one in
            # flight. Unless the chain lost it (a reorg): then the database's view stands.
            after_point = (
                point.block_number is not None
                and w.block_number is not None
                and w.block_number > point.block_number
                and not (check is not None and check.state in ALERT_STATES)
            )
            if w.status in FINAL and not after_point:
                if w.status == WithdrawalStatus.COMPLETED.value:
                    line(sender, w.asset).withdrawn += w.amount
                    if destination is not None:
                        line(destination, w.asset).internal_in += w.amount
                    line(sender, native).side_costs += side_costs.get(w.id) or 0
                if w.fee_paid is not None:
                    landed_attempt = landed.get(w.tx_hash or "")
                    payer = (landed_attempt.fee_params or {}).get("source") if landed_attempt is not None else None
                    line(payer or sender, native).fees += w.fee_paid
                continue
            tried = by_withdrawal.get(w.id, [])
            if not tried and w.status not in FINAL:
                continue  # nothing signed yet: nothing can have moved
            # In flight: signed bytes may land (or have landed) any moment.
            line(sender, w.asset).in_flight_out += w.amount
            if destination is not None:
                line(destination, w.asset).in_flight_in += w.amount
            fee_payers: dict[str, int] = {}
            for attempt in tried or []:
                payer = (attempt.fee_params or {}).get("source") or sender
                fee_payers[payer] = max(fee_payers.get(payer, 0), attempt.max_fee)
            if not tried and w.fee_paid is not None:
                fee_payers[sender] = w.fee_paid
            for payer, fee in fee_payers.items():
                line(payer, native).in_flight_out += fee
        return lines

    async def _rows(
        self, chain: Chain, history: ChainHistory, wallets: list[Wallet], lines: dict[tuple[str, str], _Line], point: HistoryPoint
    ) -> list[dict[str, Any]]:
        assets = chain.assets()  # type: ignore[attr-defined]
        gate = asyncio.Semaphore(BALANCE_READS)

        async def read(address: str, asset: Any) -> int:
            async with gate:
                balance = await history.ledger_balance(address, asset, point)
            activity.heartbeat("balances")
            return balance

        pairs = [(w, a) for w in wallets if w.address for a in assets]
        balances = await asyncio.gather(*(read(w.address, a) for w, a in pairs))  # type: ignore[arg-type]
        rows = []
        for (wallet, asset), on_chain in zip(pairs, balances, strict=True):
            assert wallet.address is not None
            line = lines.get((wallet.address, asset.symbol), _Line())
            if on_chain == 0 and not line.touched():
                continue
            difference = on_chain - line.expected
            status = _status_of(difference, line)
            rows.append(
                {
                    "wallet_id": wallet.id,
                    "owner": wallet.owner,
                    "label": wallet.label,
                    "address": wallet.address,
                    "asset": asset.symbol,
                    "decimals": asset.decimals,
                    "on_chain": str(on_chain),
                    "deposits": str(line.deposits),
                    "internal_in": str(line.internal_in),
                    "withdrawn": str(line.withdrawn),
                    "fees": str(line.fees),
                    "side_costs": str(line.side_costs),
                    "in_flight_out": str(line.in_flight_out),
                    "in_flight_in": str(line.in_flight_in),
                    "expected": str(line.expected),
                    "difference": str(difference),
                    "drift": str(difference if status == "DRIFT" else 0),
                    "status": status,
                }
            )
        return rows

    async def _unexplained(self, chain_name: str, history: ChainHistory, wallets: list[Wallet], point: HistoryPoint) -> list[dict[str, Any]]:
        """Spends from our keys found on chain that are none of our attempts, and (EVM) nonces
        used on chain that no attempt of ours and no such spend accounts for."""
        by_address = {w.address: w for w in wallets if w.address}
        async with self._sessions() as session:
            spent = await session.exec(
                select(ChainTransfer)
                .where(
                    ChainTransfer.chain == chain_name,
                    ChainTransfer.direction == "OUT",
                    sa.true() if point.block_number is None else col(ChainTransfer.block_number) <= point.block_number,
                    col(ChainTransfer.tx_hash).not_in(select(TransferAttempt.tx_hash).where(TransferAttempt.chain == chain_name)),
                )
                .order_by(col(ChainTransfer.block_number), col(ChainTransfer.id))
            )
            spends = list(spent.all())
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for row in spends:
            entry = found.setdefault(
                (row.tx_hash, row.account),
                {
                    "kind": "TRANSACTION",
                    "tx_hash": row.tx_hash,
                    "account": row.account,
                    "wallet_id": by_address[row.account].id if row.account in by_address else None,
                    "sequence": row.sequence,
                    "block_number": row.block_number,
                    "counterparty": row.counterparty,
                    "fee": "0",
                    "moved": [],
                },
            )
            entry["fee"] = str(int(entry["fee"]) + row.fee)
            entry["sequence"] = entry["sequence"] if entry["sequence"] is not None else row.sequence
            entry["counterparty"] = entry["counterparty"] or row.counterparty
            if row.amount:
                entry["moved"].append({"asset": row.asset, "amount": str(row.amount)})
        listed = list(found.values())
        listed += await self._nonce_gaps(chain_name, history, wallets, point, spends)
        return listed

    async def _nonce_gaps(
        self, chain_name: str, history: ChainHistory, wallets: list[Wallet], point: HistoryPoint, spends: list[ChainTransfer]
    ) -> list[dict[str, Any]]:
        gaps = []
        for wallet in wallets:
            assert wallet.address is not None
            used = await history.consumed_slots(wallet.address, point)
            if used is None:
                return []  # not a chain whose slots count from zero per account
            if used == 0:
                continue
            async with self._sessions() as session:
                # sqlmodel's exec overloads take a select of whole models or columns, not of DISTINCT (stubs gap).
                claimed = await session.exec(  # type: ignore[call-overload]
                    sa.select(sa.distinct(col(TransferAttempt.sequence))).where(
                        col(TransferAttempt.chain) == chain_name, col(TransferAttempt.sender) == wallet.address
                    )
                )
                known = {int(s) for s in claimed.scalars().all() if s is not None}
            known |= {s.sequence for s in spends if s.account == wallet.address and s.sequence is not None}
            missing = [n for n in range(used) if n not in known]
            if missing:
                gaps.append(
                    {
                        "kind": "NONCE",
                        "account": wallet.address,
                        "wallet_id": wallet.id,
                        "count": len(missing),
                        "nonces": missing[:20],
                        "used": used,
                    }
                )
        return gaps

    async def _vanished(self, chain_name: str) -> list[dict[str, Any]]:
        async with self._sessions() as session:
            rows = await session.exec(
                select(ReconciliationCheck, Withdrawal)
                .join(Withdrawal, col(Withdrawal.id) == col(ReconciliationCheck.withdrawal_id))
                .where(
                    ReconciliationCheck.chain == chain_name,
                    col(ReconciliationCheck.state).in_(ALERT_STATES),
                    Withdrawal.status == WithdrawalStatus.COMPLETED.value,
                )
                .order_by(col(ReconciliationCheck.first_checked_at))
            )
            return [
                {
                    "withdrawal_id": w.id,
                    "wallet_id": w.wallet_id,
                    "tx_hash": c.tx_hash,
                    "state": c.state,
                    "detail": c.detail,
                    "asset": w.asset,
                    "amount": str(w.amount),
                    "block_number": w.block_number,
                }
                for c, w in rows.all()
            ]

    async def _check_counts(self, chain_name: str) -> dict[str, int]:
        async with self._sessions() as session:
            rows = await session.exec(
                sa.select(ReconciliationCheck.state, sa.func.count())  # type: ignore[call-overload]
                .where(ReconciliationCheck.chain == chain_name)
                .group_by(ReconciliationCheck.state)
            )
            return {state: int(count) for state, count in rows.all()}

    async def _save(
        self,
        step: ReconciliationStep,
        status: str,
        point: dict[str, Any],
        rows: list[dict[str, Any]],
        vanished: list[dict[str, Any]],
        unexplained: list[dict[str, Any]],
        summary: dict[str, Any],
    ) -> str:
        """The run's report (rewritten by a retry of the same run) and the events for findings
        that the chain's previous report did not have."""
        async with self._sessions() as session, session.begin():
            await advisory_lock(session, "reconciliation-report", step.chain)
            report = (await session.exec(select(ReconciliationReport).where(ReconciliationReport.run_key == step.run_key))).first()
            previous = (
                await session.exec(
                    select(ReconciliationReport)
                    .where(ReconciliationReport.chain == step.chain, ReconciliationReport.run_key != step.run_key)
                    .order_by(col(ReconciliationReport.created_at).desc())
                    .limit(1)
                )
            ).first()
            if report is None:
                report = ReconciliationReport(id=str(uuid.uuid4()), run_key=step.run_key, chain=step.chain, status=status)
            else:
                await session.exec(sa.delete(ReconciliationEvent).where(col(ReconciliationEvent.report_id) == report.id))
            report.status, report.point, report.rows = status, point, rows
            report.vanished, report.unexplained, report.summary = vanished, unexplained, summary
            report.created_at = utcnow()
            session.add(report)
            for event in _new_findings(step.chain, report.id, rows, vanished, unexplained, previous):
                session.add(event)
            return report.id

    def _export_metrics(
        self, chain_name: str, chain: Chain, rows: list[dict[str, Any]], vanished: list[Any], unexplained: list[Any], status: str
    ) -> None:
        drifting = {(r["wallet_id"], r["asset"]): r for r in rows if r["status"] == "DRIFT"}
        for wallet_id, asset in self._drift_labels.get(chain_name, set()) - set(drifting):
            try:
                metrics.RECONCILIATION_DRIFT.remove(chain_name, wallet_id, asset)
            except KeyError:
                pass
        for (wallet_id, asset), row in drifting.items():
            metrics.RECONCILIATION_DRIFT.labels(chain=chain_name, wallet_id=wallet_id, asset=asset).set(
                int(row["drift"]) / 10 ** int(row["decimals"])
            )
        self._drift_labels[chain_name] = set(drifting)
        metrics.RECONCILIATION_VANISHED.labels(chain=chain_name).set(len(vanished))
        metrics.RECONCILIATION_UNEXPLAINED.labels(chain=chain_name).set(len(unexplained))
        metrics.RECONCILIATION_RUNS.labels(chain=chain_name, status=status).inc()
        metrics.RECONCILIATION_LAST_RUN.labels(chain=chain_name).set_to_current_time()
        if drifting:
            log.error(
                "reconciliation drift",
                extra={"chain": chain_name, "rows": [{k: r[k] for k in ("wallet_id", "asset", "drift")} for r in drifting.values()]},
            )


def _new_findings(
    chain: str,
    report_id: str,
    rows: list[dict[str, Any]],
    vanished: list[dict[str, Any]],
    unexplained: list[dict[str, Any]],
    previous: ReconciliationReport | None,
) -> list[ReconciliationEvent]:
    """Events for drift that is new or changed, and vanished withdrawals and unexplained spends
    that the previous report did not list."""
    before_drift = {(r["wallet_id"], r["asset"]): r["drift"] for r in (previous.rows if previous else []) if r["status"] == "DRIFT"}
    before_vanished = {(v["withdrawal_id"], v["state"]) for v in (previous.vanished if previous else [])}
    before_unexplained = {_finding_key(u) for u in (previous.unexplained if previous else [])}
    events = []
    for r in rows:
        if r["status"] == "DRIFT" and before_drift.get((r["wallet_id"], r["asset"])) != r["drift"]:
            events.append(
                ReconciliationEvent(
                    report_id=report_id,
                    chain=chain,
                    kind="DRIFT",
                    wallet_id=r["wallet_id"],
                    asset=r["asset"],
                    amount=int(r["drift"]),
                    detail={k: r[k] for k in ("on_chain", "expected", "address")},
                )
            )
    for v in vanished:
        if (v["withdrawal_id"], v["state"]) not in before_vanished:
            events.append(
                ReconciliationEvent(
                    report_id=report_id,
                    chain=chain,
                    kind="VANISHED",
                    wallet_id=v["wallet_id"],
                    asset=v["asset"],
                    amount=int(v["amount"]),
                    tx_hash=v["tx_hash"],
                    withdrawal_id=v["withdrawal_id"],
                    detail={"state": v["state"], "detail": v["detail"]},
                )
            )
    for u in unexplained:
        if _finding_key(u) not in before_unexplained:
            events.append(
                ReconciliationEvent(
                    report_id=report_id,
                    chain=chain,
                    kind="UNEXPLAINED",
                    wallet_id=u.get("wallet_id"),
                    tx_hash=u.get("tx_hash"),
                    detail=u,
                )
            )
    return events


def _finding_key(finding: dict[str, Any]) -> tuple[Any, ...]:
    if finding.get("kind") == "NONCE":
        return ("NONCE", finding["account"], finding["count"])
    return ("TRANSACTION", finding.get("tx_hash"), finding.get("account"))
