"""The Stellar devnet's per-account queue limit (stellar-core's TRY_AGAIN_LATER).

stellar-core keeps at most one transaction per source account in its queue / open ledger. A
second transaction from the same account (even with the right next sequence number) is refused
with TRY_AGAIN_LATER and not applied: Horizon answers 503 {"tx_status": "TRY_AGAIN_LATER"} on
/transactions_async and, on the synchronous /transactions, waits for the hash to land and ends
in a 504 timeout. Different tx source ("channel") accounts get into the same ledger.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from stellar_sdk import (
    Account,
    Asset,
    Keypair,
    ServerAsync,
    Transaction,
    TransactionBuilder,
)
from stellar_sdk import xdr as x
from stellar_sdk.client.aiohttp_client import AiohttpClient
from stellar_sdk.exceptions import BadResponseError

from devnet.stellar import StellarDevnet, run_stellar_devnet

XLM = 10_000_000
FRIENDBOT_XLM = 10_000
SUBMISSION_TIMEOUT = 1.5
TIMEOUT_TYPE = "https://stellar.org/horizon-errors/timeout"


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
async def manual() -> AsyncIterator[StellarDevnet]:
    """Ledgers close only on demand (a synchronous submission closes its ledger at once)."""
    async with run_stellar_devnet(port=0, close_interval_ms=0, submission_timeout=SUBMISSION_TIMEOUT) as d:
        yield d


@pytest.fixture(scope="module")
async def slow() -> AsyncIterator[StellarDevnet]:
    """A timed closer that never fires during the tests: synchronous submissions really wait,
    and the tests close ledgers through /_devnet/close_ledgers when they choose to."""
    async with run_stellar_devnet(port=0, close_interval_ms=600_000, submission_timeout=SUBMISSION_TIMEOUT) as d:
        yield d


@pytest.fixture(scope="module")
async def manual_http(manual: StellarDevnet) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=manual.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
async def slow_http(slow: StellarDevnet) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=slow.url, timeout=30) as c:
        yield c


# ----------------------------------------------------------------------------- helpers


async def status(http: httpx.AsyncClient) -> dict:
    r = await http.get("/_devnet/status")
    assert r.status_code == 200
    return r.json()


async def close(http: httpx.AsyncClient) -> int:
    r = await http.post("/_devnet/close_ledgers", json={"count": 1})
    assert r.status_code == 200
    return r.json()["latest_ledger"]


async def fund_now(http: httpx.AsyncClient, n: int) -> list[Keypair]:
    """Friendbot n new accounts on a manual-close devnet (each request closes its ledger)."""
    kps = [Keypair.random() for _ in range(n)]
    for kp in kps:
        r = await http.get("/friendbot", params={"addr": kp.public_key})
        assert r.status_code == 200, r.text
    return kps


async def fund_concurrently(http: httpx.AsyncClient, n: int) -> tuple[list[Keypair], list[httpx.Response]]:
    """Friendbot n accounts at once on the slow devnet: all n creations must sit in the open
    ledger together (friendbot is exempt from the queue limit) before we close it."""
    kps = [Keypair.random() for _ in range(n)]
    before = len((await status(http))["pending_transactions"])

    async def closer() -> None:
        deadline = time.monotonic() + SUBMISSION_TIMEOUT
        while len((await status(http))["pending_transactions"]) < before + n:
            assert time.monotonic() < deadline, "friendbot requests did not all reach the open ledger"
            await asyncio.sleep(0.01)
        await close(http)

    *responses, _ = await asyncio.gather(
        *(http.get("/friendbot", params={"addr": kp.public_key}) for kp in kps),
        closer(),
    )
    return kps, responses


async def sequence(http: httpx.AsyncClient, account_id: str) -> int:
    r = await http.get(f"/accounts/{account_id}")
    assert r.status_code == 200, r.text
    return int(r.json()["sequence"])


async def native_balance(http: httpx.AsyncClient, account_id: str) -> int:
    r = await http.get(f"/accounts/{account_id}")
    for line in r.json()["balances"]:
        if line["asset_type"] == "native":
            return round(float(line["balance"]) * XLM)
    raise AssertionError("no native balance")


def payment(
    devnet: StellarDevnet,
    source: Keypair,
    seq: int,
    to: str,
    xlm: str,
    *,
    op_source: Keypair | None = None,
    signers: tuple[Keypair, ...] = (),
) -> Transaction:
    """A payment tx with sequence number ``seq`` + 1 (the account's current seq is ``seq``)."""
    builder = TransactionBuilder(Account(source.public_key, seq), devnet.network_passphrase, base_fee=100)
    tx = builder.append_payment_op(to, Asset.native(), xlm, source=op_source.public_key if op_source else None).set_timeout(3600).build()
    for kp in (source, *signers):
        tx.sign(kp)
    return tx


async def post_async(http: httpx.AsyncClient, tx) -> httpx.Response:  # type: ignore[no-untyped-def]
    return await http.post("/transactions_async", data={"tx": tx.to_xdr()})


async def post_sync(http: httpx.AsyncClient, tx) -> httpx.Response:  # type: ignore[no-untyped-def]
    return await http.post("/transactions", data={"tx": tx.to_xdr()})


# ----------------------------------------------------------------------------- (a) same account


async def test_second_tx_from_same_account_is_try_again_later_until_the_close(manual: StellarDevnet, manual_http: httpx.AsyncClient) -> None:
    http = manual_http
    alice, bob = await fund_now(http, 2)
    seq = await sequence(http, alice.public_key)
    first = payment(manual, alice, seq, bob.public_key, "10")
    second = payment(manual, alice, seq + 1, bob.public_key, "20")  # the right next sequence number

    r = await post_async(http, first)
    assert r.status_code == 201 and r.json() == {
        "tx_status": "PENDING",
        "hash": first.hash_hex(),
    }

    r = await post_async(http, second)
    assert r.status_code == 503
    assert r.json() == {"tx_status": "TRY_AGAIN_LATER", "hash": second.hash_hex()}
    # the SDK sees a 5xx (no error_result_xdr: nothing was decided about the tx)
    async with ServerAsync(manual.url, client=AiohttpClient()) as server:
        with pytest.raises(BadResponseError) as info:
            await server.submit_transaction_async(second, skip_memo_required_check=True)
        assert info.value.status == 503

    # synchronous submit in manual mode: the 504 timeout comes at once, nothing is closed
    started = time.monotonic()
    r = await post_sync(http, second)
    assert r.status_code == 504 and r.json()["type"] == TIMEOUT_TYPE
    assert r.headers["content-type"].startswith("application/problem+json")
    assert time.monotonic() - started < SUBMISSION_TIMEOUT

    st = await status(http)
    assert st["pending_transactions"] == [first.hash_hex()]  # the second was not applied
    ledger = await close(http)
    assert (await http.get(f"/transactions/{second.hash_hex()}")).status_code == 404
    landed = (await http.get(f"/transactions/{first.hash_hex()}")).json()
    assert landed["ledger"] == ledger and landed["successful"] is True
    assert await sequence(http, alice.public_key) == seq + 1
    assert await native_balance(http, bob.public_key) == (FRIENDBOT_XLM + 10) * XLM

    # the ledger closed: the identical envelope is accepted now
    r = await post_async(http, second)
    assert r.status_code == 201 and r.json() == {
        "tx_status": "PENDING",
        "hash": second.hash_hex(),
    }
    ledger = await close(http)
    landed = (await http.get(f"/transactions/{second.hash_hex()}")).json()
    assert landed["ledger"] == ledger and landed["successful"] is True
    assert await sequence(http, alice.public_key) == seq + 2
    assert await native_balance(http, bob.public_key) == (FRIENDBOT_XLM + 30) * XLM
    assert await native_balance(http, alice.public_key) == (FRIENDBOT_XLM - 30) * XLM - 200


async def test_sync_submit_waits_submission_timeout_then_504(slow: StellarDevnet, slow_http: httpx.AsyncClient) -> None:
    http = slow_http
    (alice, bob), responses = await fund_concurrently(http, 2)
    assert all(r.status_code == 200 for r in responses)
    seq = await sequence(http, alice.public_key)
    first = payment(slow, alice, seq, bob.public_key, "1")
    second = payment(slow, alice, seq + 1, bob.public_key, "2")
    assert (await post_async(http, first)).status_code == 201

    # Horizon treats TRY_AGAIN_LATER like PENDING and waits for the hash, which never lands
    started = time.monotonic()
    r = await post_sync(http, second)
    waited = time.monotonic() - started
    assert r.status_code == 504 and r.json()["type"] == TIMEOUT_TYPE
    assert SUBMISSION_TIMEOUT - 0.05 <= waited < SUBMISSION_TIMEOUT + 1.0
    assert (await status(http))["pending_transactions"] == [first.hash_hex()]

    # While a sync submission waits, the same envelope may land through another submission:
    # then the waiting request answers with the landed transaction, like Horizon does.
    await close(http)
    third = payment(slow, alice, seq + 2, bob.public_key, "3")
    assert (await post_async(http, second)).status_code == 201
    refused = (await status(http))["rejections"].get("TRY_AGAIN_LATER", 0)
    waiting = asyncio.create_task(post_sync(http, third))  # TRY_AGAIN_LATER: second is open
    deadline = time.monotonic() + SUBMISSION_TIMEOUT / 2
    while (await status(http))["rejections"].get("TRY_AGAIN_LATER", 0) <= refused:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await close(http)
    assert (await post_async(http, third)).status_code == 201
    ledger = await close(http)
    r = await waiting
    assert r.status_code == 200, r.text
    assert r.json()["hash"] == third.hash_hex() and r.json()["ledger"] == ledger
    assert await sequence(http, alice.public_key) == seq + 3


# ----------------------------------------------------------------------------- (b) channel accounts


async def test_distinct_tx_source_accounts_share_a_ledger(manual: StellarDevnet, manual_http: httpx.AsyncClient) -> None:
    http = manual_http
    alice, channel, bob = await fund_now(http, 3)
    alice_seq = await sequence(http, alice.public_key)
    channel_seq = await sequence(http, channel.public_key)
    direct = payment(manual, alice, alice_seq, bob.public_key, "5")
    # the channel account is the tx source (pays the fee, uses its sequence number); the
    # payment's operation source is alice, so both sign
    via_channel = payment(
        manual,
        channel,
        channel_seq,
        bob.public_key,
        "7",
        op_source=alice,
        signers=(alice,),
    )
    for tx in (direct, via_channel):
        r = await post_async(http, tx)
        assert r.status_code == 201 and r.json()["tx_status"] == "PENDING", r.text
    assert (await status(http))["pending_transactions"] == [
        direct.hash_hex(),
        via_channel.hash_hex(),
    ]

    ledger = await close(http)
    for tx in (direct, via_channel):
        landed = (await http.get(f"/transactions/{tx.hash_hex()}")).json()
        assert landed["ledger"] == ledger and landed["successful"] is True
    assert await native_balance(http, bob.public_key) == (FRIENDBOT_XLM + 12) * XLM
    assert await native_balance(http, alice.public_key) == (FRIENDBOT_XLM - 12) * XLM - 100
    assert await native_balance(http, channel.public_key) == FRIENDBOT_XLM * XLM - 100
    assert await sequence(http, alice.public_key) == alice_seq + 1
    assert await sequence(http, channel.public_key) == channel_seq + 1


async def test_fee_bump_fee_source_counts_too(manual: StellarDevnet, manual_http: httpx.AsyncClient) -> None:
    http = manual_http
    alice, carol, sponsor, bob = await fund_now(http, 4)
    alice_seq = await sequence(http, alice.public_key)
    carol_seq = await sequence(http, carol.public_key)
    pending = payment(manual, alice, alice_seq, bob.public_key, "1")
    assert (await post_async(http, pending)).status_code == 201

    # alice pays the fee of carol's transaction: alice already has one in the open ledger
    inner = payment(manual, carol, carol_seq, bob.public_key, "1")
    bump = TransactionBuilder.build_fee_bump_transaction(alice.public_key, 200, inner, manual.network_passphrase)
    bump.sign(alice)
    r = await post_async(http, bump)
    assert r.status_code == 503 and r.json() == {
        "tx_status": "TRY_AGAIN_LATER",
        "hash": bump.hash_hex(),
    }

    # a sponsor pays for alice's next transaction: alice is its tx source
    inner_alice = payment(manual, alice, alice_seq + 1, bob.public_key, "1")
    bump_alice = TransactionBuilder.build_fee_bump_transaction(sponsor.public_key, 200, inner_alice, manual.network_passphrase)
    bump_alice.sign(sponsor)
    r = await post_async(http, bump_alice)
    assert r.status_code == 503 and r.json()["tx_status"] == "TRY_AGAIN_LATER"

    # the sponsor's fee bump over carol's tx touches neither account: accepted
    sponsored = TransactionBuilder.build_fee_bump_transaction(sponsor.public_key, 200, inner, manual.network_passphrase)
    sponsored.sign(sponsor)
    r = await post_async(http, sponsored)
    assert r.status_code == 201 and r.json()["tx_status"] == "PENDING", r.text
    # now carol (tx source) and the sponsor (fee source) are both busy
    r = await post_async(http, payment(manual, carol, carol_seq + 1, bob.public_key, "1"))
    assert r.status_code == 503
    r = await post_async(
        http,
        payment(
            manual,
            sponsor,
            await sequence(http, sponsor.public_key),
            bob.public_key,
            "1",
        ),
    )
    assert r.status_code == 503

    await close(http)
    assert await sequence(http, carol.public_key) == carol_seq + 1
    assert (await http.get(f"/transactions/{bump.hash_hex()}")).status_code == 404
    assert (await http.get(f"/transactions/{bump_alice.hash_hex()}")).status_code == 404
    r = await post_async(http, bump_alice)  # after the close the identical envelope goes in
    assert r.status_code == 201, r.text
    await close(http)
    assert await sequence(http, alice.public_key) == alice_seq + 2


# ----------------------------------------------------------------------------- (c) friendbot


async def test_friendbot_is_exempt_and_funds_concurrently(slow: StellarDevnet, slow_http: httpx.AsyncClient) -> None:
    http = slow_http
    kps, responses = await fund_concurrently(http, 8)
    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
    ledgers = {r.json()["ledger"] for r in responses}
    assert len(ledgers) == 1  # all eight root-account transactions in one ledger
    for kp in kps:
        assert await native_balance(http, kp.public_key) == FRIENDBOT_XLM * XLM


async def test_friendbot_concurrently_with_a_running_closer() -> None:
    async with (
        run_stellar_devnet(port=0, close_interval_ms=200, submission_timeout=5.0) as d,
        httpx.AsyncClient(base_url=d.url, timeout=30) as http,
    ):
        kps = [Keypair.random() for _ in range(10)]
        responses = await asyncio.gather(*(http.get("/friendbot", params={"addr": kp.public_key}) for kp in kps))
        assert [r.status_code for r in responses] == [200] * 10, [r.text for r in responses]
        assert len({r.json()["ledger"] for r in responses}) < 10
        assert "TRY_AGAIN_LATER" not in (await status(http))["rejections"]


# ----------------------------------------------------------------------------- (d) status counters


async def test_status_counts_rejections_and_fault_injection_still_works() -> None:
    async with (
        run_stellar_devnet(port=0, close_interval_ms=0, submission_timeout=SUBMISSION_TIMEOUT) as d,
        httpx.AsyncClient(base_url=d.url, timeout=30) as http,
    ):
        assert (await status(http))["rejections"] == {}
        alice, bob = await fund_now(http, 2)
        seq = await sequence(http, alice.public_key)
        first = payment(d, alice, seq, bob.public_key, "1")
        second = payment(d, alice, seq + 1, bob.public_key, "1")

        # a sequence gap is tx_bad_seq (a rejection by result code), even with an empty queue
        r = await post_async(http, second)
        assert r.status_code == 400 and r.json()["tx_status"] == "ERROR"
        assert x.TransactionResult.from_xdr(r.json()["error_result_xdr"]).result.code == (x.TransactionResultCode.txBAD_SEQ)
        assert (await status(http))["rejections"] == {"tx_bad_seq": 1}

        assert (await post_async(http, first)).status_code == 201
        assert (await post_async(http, first)).status_code == 409  # DUPLICATE is no rejection
        assert (await post_async(http, second)).status_code == 503
        assert (await post_sync(http, second)).status_code == 504
        # a stale sequence number from the busy account: the queue answers first
        assert (await post_async(http, payment(d, alice, seq - 1, bob.public_key, "1"))).status_code == 503
        assert (await status(http))["rejections"] == {
            "tx_bad_seq": 1,
            "TRY_AGAIN_LATER": 3,
        }

        # fail_next_submissions, apply=false: dropped before the ledger, nothing counted
        r = await http.post(
            "/_devnet/fail_next_submissions",
            json={"count": 1, "status": 503, "apply": False},
        )
        assert r.json()["pending_failures"] == 1
        r = await post_async(http, second)
        assert r.status_code == 503 and r.json()["type"].endswith("/service_unavailable")
        assert (await status(http))["rejections"] == {
            "tx_bad_seq": 1,
            "TRY_AGAIN_LATER": 3,
        }

        # apply=true: processed (refused again: alice is still busy), then the answer is lost
        await http.post("/_devnet/fail_next_submissions", json={"count": 1, "status": 500})
        r = await post_async(http, second)
        assert r.status_code == 500 and r.json()["type"].endswith("/server_error")
        st = await status(http)
        assert st["rejections"] == {"tx_bad_seq": 1, "TRY_AGAIN_LATER": 4}
        assert st["pending_failures"] == 0 and st["pending_transactions"] == [first.hash_hex()]

        # after the close: a lost sync answer still means the tx landed
        await close(http)
        await http.post("/_devnet/fail_next_submissions", json={"count": 1, "status": 504})
        r = await post_sync(http, second)
        assert r.status_code == 504
        landed = await http.get(f"/transactions/{second.hash_hex()}")
        assert landed.status_code == 200 and landed.json()["successful"] is True
        assert await sequence(http, alice.public_key) == seq + 2
        assert (await status(http))["rejections"] == {
            "tx_bad_seq": 1,
            "TRY_AGAIN_LATER": 4,
        }

        # the ledger object itself exposes the same counters
        assert d.ledger.rejection_counts() == {"tx_bad_seq": 1, "TRY_AGAIN_LATER": 4}
