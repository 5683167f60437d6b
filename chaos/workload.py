"""What the chaos run asks custody to do: wallets on the three chains, funded, and N withdrawals
across them, each to a fresh destination of its own (so the destination's balance counts how
many times it was paid), with a mix of amounts (some more than the wallet holds), some
cancelled and some paused then resumed at seeded moments. Everything goes through the API."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from chaos.client import ChaosClient, GaveUp
from chaos.config import CHAINS, ChaosConfig

# (chain, asset) -> decimals, and the range of normal amounts in base units.
DECIMALS = {("anvil", "ETH"): 18, ("anvil", "TUSD"): 6, ("solana", "SOL"): 9, ("solana", "TUSD"): 6, ("stellar", "XLM"): 7}
ASSETS = {"anvil": (("ETH", 0.6), ("TUSD", 0.4)), "solana": (("SOL", 0.6), ("TUSD", 0.4)), "stellar": (("XLM", 1.0),)}
# Steps of each amount: 0.001 ETH/SOL, 0.01 TUSD, 0.1 XLM; SOL at least rent-exempt for a new
# account (0.00089 SOL), XLM at least 1 to create the destination account.
AMOUNT_STEPS = {
    ("anvil", "ETH"): (10**15, 1, 50),
    ("anvil", "TUSD"): (10**4, 1, 5000),
    ("solana", "SOL"): (10**6, 1, 50),
    ("solana", "TUSD"): (10**4, 1, 5000),
    ("stellar", "XLM"): (10**6, 10, 50),
}
# What each wallet is funded with (decimal strings in the asset's unit).
FUNDING = {("anvil", "ETH"): "10", ("anvil", "TUSD"): "100000", ("solana", "SOL"): "10", ("solana", "TUSD"): "100000", ("stellar", "XLM"): "10000"}
# More than any wallet is ever funded with: INSUFFICIENT_FUNDS, nothing may be sent.
OVERSIZED = {
    ("anvil", "ETH"): "5000",
    ("anvil", "TUSD"): "50000000",
    ("solana", "SOL"): "5000",
    ("solana", "TUSD"): "50000000",
    ("stellar", "XLM"): "900000",
}
FINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def to_decimal(base_units: int, decimals: int) -> str:
    return format(Decimal(base_units).scaleb(-decimals).normalize(), "f")


@dataclass
class Planned:
    """One withdrawal of the plan, and what happened to its requests."""

    index: int
    chain: str
    asset: str
    wallet: int  # index into the chain's wallets
    amount: str
    base_units: int
    destination: str
    key: str  # Idempotency-Key
    at: float  # seconds after the start of submissions
    oversized: bool = False
    cancel_after: float | None = None
    pause_after: float | None = None
    resume_after: float | None = None
    withdrawal_id: str | None = None
    submit_error: str | None = None
    actions: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def _destination(chain: str, rng: random.Random) -> str:
    seed = bytes(rng.getrandbits(8) for _ in range(32))
    if chain == "anvil":
        from eth_account import Account

        return Account.from_key(seed).address
    if chain == "solana":
        from solders.keypair import Keypair

        return str(Keypair.from_seed(seed).pubkey())
    from stellar_sdk import Keypair as StellarKeypair

    return StellarKeypair.from_raw_ed25519_seed(seed).public_key


def plan(config: ChaosConfig, rng: random.Random) -> list[Planned]:
    times = sorted(rng.uniform(0, config.submit_seconds) for _ in range(config.withdrawals))
    planned = []
    for index, at in enumerate(times):
        chain = rng.choice(CHAINS)
        assets, weights = zip(*ASSETS[chain], strict=True)
        asset = rng.choices(assets, weights)[0]
        decimals = DECIMALS[(chain, asset)]
        oversized = rng.random() < config.oversized_share
        if oversized:
            amount = OVERSIZED[(chain, asset)]
            base_units = int(Decimal(amount).scaleb(decimals))
        else:
            step, low, high = AMOUNT_STEPS[(chain, asset)]
            base_units = step * rng.randint(low, high)
            amount = to_decimal(base_units, decimals)
        item = Planned(
            index=index,
            chain=chain,
            asset=asset,
            wallet=rng.randrange(config.wallets_per_chain),
            amount=amount,
            base_units=base_units,
            destination=_destination(chain, rng),
            key=f"chaos-{config.seed}-{index}",
            at=at,
            oversized=oversized,
        )
        roll = rng.random()
        if roll < config.cancel_share:
            item.cancel_after = rng.uniform(0, 4)
        elif roll < config.cancel_share + config.pause_share:
            item.pause_after = rng.uniform(0, 3)
            item.resume_after = item.pause_after + rng.uniform(1, 5)
        planned.append(item)
    return planned


class Workload:
    def __init__(self, api: ChaosClient, ops: ChaosClient, stack: Any, config: ChaosConfig, rng: random.Random) -> None:
        self.api = api
        self.ops = ops
        self.stack = stack
        self.config = config
        self.rng = rng
        self.wallets: dict[str, list[dict[str, Any]]] = {c: [] for c in CHAINS}
        self.planned: list[Planned] = []

    # --- wallets ---------------------------------------------------------------------------
    async def create_wallets(self, count_per_chain: int, label: str) -> None:
        async def one(chain: str, n: int) -> None:
            body = await self.api.json(
                "POST",
                "/v1/wallets",
                json={"chain": chain, "label": f"{label}-{n}"},
                headers={"Idempotency-Key": f"chaos-wallet-{label}-{chain}-{n}"},
            )
            while body["status"] != "ACTIVE":
                if body["status"] == "FAILED":
                    raise RuntimeError(f"wallet creation failed: {body}")
                await asyncio.sleep(0.3)
                body = await self.api.json("GET", f"/v1/wallets/{body['id']}")
            self.wallets[chain].append(body)

        await asyncio.gather(*(one(c, n) for c in CHAINS for n in range(count_per_chain)))
        for chain in CHAINS:
            self.wallets[chain].sort(key=lambda w: (w["signer_backend"], w["label"]))

    async def fund_wallets(self, spl_authority: Path, spl_mint: str, solana_url: str) -> None:
        from chaos.solana_token import mint_to

        async def one(chain: str, wallet: dict[str, Any]) -> None:
            for (c, asset), amount in FUNDING.items():
                if c != chain:
                    continue
                if chain == "solana" and asset == "TUSD":
                    await mint_to(
                        solana_url,
                        spl_authority,
                        spl_mint,
                        wallet["address"],
                        int(Decimal(amount).scaleb(DECIMALS[(c, asset)])),
                        DECIMALS[(c, asset)],
                    )
                    continue
                if chain == "stellar" and asset == "XLM":
                    # Friendbot funds its own fixed amount (10,000 XLM), once: a retry after a lost
                    # answer finds the account made (409 ALREADY_FUNDED).
                    await self.api.json("POST", f"/v1/wallets/{wallet['id']}/fund", json={}, deadline=120, expect=(200, 409))
                    continue
                body = {"amount": amount} | ({} if asset in ("ETH", "SOL") else {"asset": asset})
                await self.api.json("POST", f"/v1/wallets/{wallet['id']}/fund", json=body, deadline=120)

        await asyncio.gather(*(one(c, w) for c in CHAINS for w in self.wallets[c]))

    # --- withdrawals -----------------------------------------------------------------------
    async def run(self, planned: list[Planned], started: float, deadline: float) -> None:
        """Submit every planned withdrawal at its moment and carry out its operator actions."""
        self.planned = planned
        await asyncio.gather(*(self._one(p, started, deadline) for p in planned))

    async def _one(self, p: Planned, started: float, deadline: float) -> None:
        await asyncio.sleep(max(0.0, started + p.at - time.monotonic()))
        wallet = self.wallets[p.chain][p.wallet]
        body = {"wallet_id": wallet["id"], "to": p.destination, "asset": p.asset, "amount": p.amount}
        try:
            response = await self.api.request(
                "POST",
                "/v1/withdrawals",
                json=body,
                headers={"Idempotency-Key": p.key},
                deadline=max(deadline - time.monotonic(), 10),
            )
        except GaveUp as e:
            p.submit_error = str(e)
            return
        if response.status_code not in (200, 202):
            p.submit_error = f"{response.status_code} {response.text[:300]}"
            return
        p.withdrawal_id = response.json()["id"]
        accepted = time.monotonic()
        if p.cancel_after is not None:
            await asyncio.sleep(max(0.0, accepted + p.cancel_after - time.monotonic()))
            p.actions.append(await self._operate(p.withdrawal_id, "cancel", deadline))
        if p.pause_after is not None and p.resume_after is not None:
            await asyncio.sleep(max(0.0, accepted + p.pause_after - time.monotonic()))
            p.actions.append(await self._operate(p.withdrawal_id, "pause", deadline))
            await asyncio.sleep(max(0.0, accepted + p.resume_after - time.monotonic()))
            # Resumed whatever the pause answered: a pause whose answer was lost may have landed.
            p.actions.append(await self._operate(p.withdrawal_id, "resume", deadline))

    async def _operate(self, withdrawal_id: str, action: str, deadline: float) -> str:
        """`action` -> its outcome: `action:ok`, or `action:<refusal code>` (e.g. too late)."""
        try:
            response = await self.api.request(
                "POST",
                f"/v1/withdrawals/{withdrawal_id}/{action}",
                json={"reason": "chaos"},
                deadline=max(deadline - time.monotonic(), 10),
            )
        except GaveUp:
            return f"{action}:NO_ANSWER"
        tries = response.extensions.get("chaos_tries", 1)
        retried = f" (try {tries})" if tries > 1 else ""
        if response.status_code == 200:
            return f"{action}:ok{retried}"
        try:
            error = response.json()["error"]
            code, message = error["code"], error["message"]
        except (ValueError, KeyError, TypeError):
            code, message = str(response.status_code), response.text[:200]
        return f"{action}:{code}{retried}: {message[:200]}"

    async def resume_left_paused(self) -> int:
        """Resume any withdrawal of the plan still paused well after its resume was answered
        (one whose resume reached the workflow before its pause did)."""
        resumed = 0
        for p in self.planned:
            if p.withdrawal_id is None or p.pause_after is None:
                continue
            body = await self.api.json("GET", f"/v1/withdrawals/{p.withdrawal_id}")
            if body["paused"] and body["status"] not in FINAL:
                p.actions.append(await self._operate(p.withdrawal_id, "resume", time.monotonic() + 60))
                resumed += 1
        return resumed
