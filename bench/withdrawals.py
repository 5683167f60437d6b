"""Benchmark: API latency and time from request to COMPLETED, against the real local stack.

    .venv/bin/python bench/withdrawals.py [--withdrawals 50] [--senders 5] [--rate 10]

Starts the benchmark's stack (bench/stack.py: `./dev up`'s processes on free ports, anvil with
1 s blocks like a real chain, the Temporal dev server with its SQLite file), and
submits withdrawals from several wallets at a steady rate (requests per second), polling each
until it is final. Prints p50/p95/max and checks them against the seed targets:
GET < 100 ms, POST < 200 ms (p95), CREATED -> COMPLETED < 10 s (p95). Exit 1 if a target is missed.
Not part of `./dev test`: timings belong here, never in unit tests.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
from eth_account import Account  # noqa: E402

from bench.stack import BenchStack, start  # noqa: E402

TARGETS = {"GET p95 ms": 100.0, "POST p95 ms": 200.0, "to COMPLETED p95 s": 10.0}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def run(stack: BenchStack, withdrawals: int, senders: int, rate: float) -> int:
    async with httpx.AsyncClient(base_url=stack.api_url, headers=stack.api_headers, timeout=60) as api:
        wallets = []
        for n in range(senders):
            wallet = (await api.post("/v1/wallets", json={"chain": "anvil", "label": f"bench-{n}"})).json()
            await api.post(f"/v1/wallets/{wallet['id']}/fund", json={"amount": "5"})
            wallets.append(wallet)

        post_ms: list[float] = []
        get_ms: list[float] = []
        started: dict[str, float] = {}

        async def submit(i: int) -> str:
            wallet = wallets[i % senders]
            t = time.perf_counter()
            response = await api.post(
                "/v1/withdrawals",
                json={"wallet_id": wallet["id"], "to": Account.create().address, "asset": "ETH", "amount": "0.01"},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
            post_ms.append((time.perf_counter() - t) * 1000)
            response.raise_for_status()
            started[response.json()["id"]] = t
            return response.json()["id"]

        async def paced(i: int) -> str:
            await asyncio.sleep(i / rate)
            return await submit(i)

        ids = await asyncio.gather(*(paced(i) for i in range(withdrawals)))
        finished: dict[str, float] = {}
        while len(finished) < len(ids):
            for withdrawal_id in ids:
                if withdrawal_id in finished:
                    continue
                t = time.perf_counter()
                body = (await api.get(f"/v1/withdrawals/{withdrawal_id}")).json()
                get_ms.append((time.perf_counter() - t) * 1000)
                if body["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                    if body["status"] != "COMPLETED":
                        print(f"{withdrawal_id} ended {body['status']} {body['error_code']}")
                    finished[withdrawal_id] = time.perf_counter()
            await asyncio.sleep(0.2)

    to_completed = [finished[i] - started[i] for i in ids]
    results = {
        "GET p95 ms": pct(get_ms, 0.95),
        "POST p95 ms": pct(post_ms, 0.95),
        "to COMPLETED p95 s": pct(to_completed, 0.95),
    }
    print(f"{withdrawals} withdrawals from {senders} wallets at {rate}/s on anvil (1 s blocks)")
    print(f"  POST   p50 {statistics.median(post_ms):7.1f} ms   p95 {results['POST p95 ms']:7.1f} ms   max {max(post_ms):7.1f} ms")
    print(f"  GET    p50 {statistics.median(get_ms):7.1f} ms   p95 {results['GET p95 ms']:7.1f} ms   max {max(get_ms):7.1f} ms")
    print(f"  ->COMPLETED p50 {statistics.median(to_completed):5.2f} s   p95 {results['to COMPLETED p95 s']:5.2f} s   max {max(to_completed):5.2f} s")
    missed = [name for name, limit in TARGETS.items() if results[name] > limit]
    for name in missed:
        print(f"  MISSED: {name} = {results[name]:.2f} > {TARGETS[name]}")
    return 1 if missed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--withdrawals", type=int, default=50)
    parser.add_argument("--senders", type=int, default=5)
    parser.add_argument("--rate", type=float, default=10.0, help="withdrawal requests per second")
    args = parser.parse_args()
    # 1 s blocks, like a real chain: COMPLETED (final) then costs two block times.
    stack = start(block_time=1, poll_interval_seconds=0.25, chains=("anvil",))
    try:
        code = asyncio.run(run(stack, args.withdrawals, args.senders, args.rate))
    finally:
        stack.stop()
    sys.exit(code)


if __name__ == "__main__":
    main()
