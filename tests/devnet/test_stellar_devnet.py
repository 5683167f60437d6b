"""The Stellar devnet driven by the real stellar-sdk ServerAsync + TransactionBuilder over HTTP.

Result XDR is decoded with stellar-sdk's own XDR classes, so the codes asserted here are the
ones a client would see from Horizon.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
from stellar_sdk import (
    Account,
    Asset,
    Keypair,
    MuxedAccount,
    ServerAsync,
    TransactionBuilder,
    TransactionEnvelope,
)
from stellar_sdk import xdr as x
from stellar_sdk.client.aiohttp_client import AiohttpClient
from stellar_sdk.exceptions import BadRequestError, BadResponseError, NotFoundError
from stellar_sdk.sep.exceptions import AccountRequiresMemoError

from devnet.stellar import DEFAULT_NETWORK_PASSPHRASE, StellarDevnet, run_stellar_devnet

STROOPS = 10_000_000


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
async def devnet() -> AsyncIterator[StellarDevnet]:
    t0 = time.monotonic()
    async with run_stellar_devnet(host="127.0.0.1", port=0, close_interval_ms=100) as d:
        assert time.monotonic() - t0 < 2.0, "devnet must start in under 2 s"
        yield d


@pytest.fixture(scope="module")
async def server(devnet: StellarDevnet) -> AsyncIterator[ServerAsync]:
    async with ServerAsync(devnet.url, client=AiohttpClient()) as s:
        yield s


@pytest.fixture(scope="module")
async def http(devnet: StellarDevnet) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=devnet.url, timeout=30) as c:
        yield c


# ----------------------------------------------------------------------------- helpers


async def fund(http: httpx.AsyncClient) -> Keypair:
    kp = Keypair.random()
    r = await http.get("/friendbot", params={"addr": kp.public_key})
    assert r.status_code == 200, r.text
    assert r.json()["successful"] is True
    return kp


def builder(devnet: StellarDevnet, account: Account, base_fee: int = 100) -> TransactionBuilder:
    return TransactionBuilder(account, devnet.network_passphrase, base_fee=base_fee).set_timeout(60)


async def native_balance(server: ServerAsync, account_id: str) -> int:
    acc = await server.accounts().account_id(account_id).call()
    native = [b for b in acc["balances"] if b["asset_type"] == "native"]
    return int(Decimal(native[0]["balance"]) * STROOPS)


async def sequence(server: ServerAsync, account_id: str) -> int:
    return (await server.load_account(account_id)).sequence


def result_of(err: BadRequestError) -> x.TransactionResult:
    assert err.result_xdr, err.message
    return x.TransactionResult.from_xdr(err.result_xdr)


async def expect_failure(server: ServerAsync, envelope, **kw) -> BadRequestError:
    with pytest.raises(BadRequestError) as info:
        await server.submit_transaction(envelope, skip_memo_required_check=True, **kw)
    err = info.value
    assert err.status == 400
    assert err.type == "https://stellar.org/horizon-errors/transaction_failed"
    assert err.title == "Transaction Failed"
    assert err.extras["envelope_xdr"] == (envelope if isinstance(envelope, str) else envelope.to_xdr())
    # result_codes are derived from the very result_xdr returned alongside them
    assert result_of(err).to_xdr() == err.extras["result_xdr"]
    return err


# ----------------------------------------------------------------------------- tests


async def test_root_friendbot_and_load_account(devnet: StellarDevnet, server: ServerAsync, http: httpx.AsyncClient) -> None:
    root = await server.root().call()
    assert root["network_passphrase"] == DEFAULT_NETWORK_PASSPHRASE == devnet.network_passphrase
    assert root["history_latest_ledger"] >= 1

    kp = Keypair.random()
    with pytest.raises(NotFoundError) as missing:
        await server.load_account(kp.public_key)
    assert missing.value.type == "https://stellar.org/horizon-errors/not_found"

    r = await http.get("/friendbot", params={"addr": kp.public_key})
    assert r.status_code == 200
    created_in = r.json()["ledger"]
    account = await server.load_account(kp.public_key)
    assert account.sequence == created_in << 32  # stellar-core's starting sequence
    raw = account.raw_data
    assert raw["sequence"] == str(created_in << 32)
    assert raw["balances"] == [
        {
            "balance": "10000.0000000",
            "buying_liabilities": "0.0000000",
            "selling_liabilities": "0.0000000",
            "asset_type": "native",
        }
    ]
    assert raw["signers"] == [{"weight": 1, "key": kp.public_key, "type": "ed25519_public_key"}]
    assert raw["subentry_count"] == 0 and raw["data"] == {}

    again = await http.get("/friendbot", params={"addr": kp.public_key})
    assert again.status_code == 400
    assert again.json()["type"] == "https://stellar.org/horizon-errors/bad_request"
    assert (await native_balance(server, kp.public_key)) == 10_000 * STROOPS


async def test_xlm_payment_and_history(devnet: StellarDevnet, server: ServerAsync, http: httpx.AsyncClient) -> None:
    alice, bob = await fund(http), await fund(http)
    account = await server.load_account(alice.public_key)
    tx = builder(devnet, account, await server.fetch_base_fee()).append_payment_op(bob.public_key, Asset.native(), "12.5").build()
    tx.sign(alice)
    resp = await server.submit_transaction(tx)
    assert resp["successful"] is True
    assert resp["hash"] == tx.hash_hex()
    assert resp["fee_charged"] == "100"
    result = x.TransactionResult.from_xdr(resp["result_xdr"])
    assert result.result.code == x.TransactionResultCode.txSUCCESS
    assert result.fee_charged.int64 == 100
    meta = x.TransactionMeta.from_xdr(resp["result_meta_xdr"])
    assert meta.v == 2 and len(meta.v2.operations) == 1

    assert await native_balance(server, bob.public_key) == 10_012_5 * STROOPS // 10
    assert await native_balance(server, alice.public_key) == 10_000 * STROOPS - 125 * STROOPS // 10 - 100
    assert await sequence(server, alice.public_key) == account.sequence

    fetched = await server.transactions().transaction(tx.hash_hex()).call()
    assert fetched["ledger"] == resp["ledger"] and fetched["successful"] is True
    payments = await server.payments().for_account(bob.public_key).order(desc=True).limit(1).call()
    [latest] = payments["_embedded"]["records"]
    assert (latest["type"], latest["from"], latest["to"], latest["amount"]) == (
        "payment",
        alice.public_key,
        bob.public_key,
        "12.5000000",
    )
    txs = await server.transactions().for_account(alice.public_key).order(desc=True).call()
    assert txs["_embedded"]["records"][0]["hash"] == tx.hash_hex()
    with pytest.raises(NotFoundError):
        await server.transactions().transaction("ab" * 32).call()


async def test_create_account_and_low_reserve(devnet: StellarDevnet, server: ServerAsync, http: httpx.AsyncClient) -> None:
    funder = await fund(http)
    new, poor = Keypair.random(), Keypair.random()
    account = await server.load_account(funder.public_key)
    tx = builder(devnet, account).append_create_account_op(new.public_key, "2").build()
    tx.sign(funder)
    resp = await server.submit_transaction(tx)
    created = await server.load_account(new.public_key)
    assert created.sequence == resp["ledger"] << 32
    assert await native_balance(server, new.public_key) == 2 * STROOPS

    seq_before = await sequence(server, funder.public_key)
    balance_before = await native_balance(server, funder.public_key)
    tx = builder(devnet, await server.load_account(funder.public_key)).append_create_account_op(poor.public_key, "0.9").build()
    tx.sign(funder)
    err = await expect_failure(server, tx)
    assert err.extras["result_codes"] == {"transaction": "tx_failed", "operations": ["op_low_reserve"]}
    result = result_of(err)
    assert result.result.code == x.TransactionResultCode.txFAILED
    [op] = result.result.results
    assert op.tr.create_account_result.code == x.CreateAccountResultCode.CREATE_ACCOUNT_LOW_RESERVE
    # applied-but-failed: fee and sequence number consumed, nothing else
    assert result.fee_charged.int64 == 100
    assert await sequence(server, funder.public_key) == seq_before + 1
    assert await native_balance(server, funder.public_key) == balance_before - 100
    with pytest.raises(NotFoundError):
        await server.load_account(poor.public_key)
    recorded = await server.transactions().transaction(tx.hash_hex()).call()
    assert recorded["successful"] is False and recorded["fee_charged"] == "100"

    tx = builder(devnet, await server.load_account(funder.public_key)).append_create_account_op(new.public_key, "5").build()
    tx.sign(funder)
    err = await expect_failure(server, tx)
    assert err.extras["result_codes"]["operations"] == ["op_already_exists"]


async def test_credit_asset_trustlines(devnet: StellarDevnet, server: ServerAsync, http: httpx.AsyncClient) -> None:
    issuer, holder = await fund(http), await fund(http)
    usd = Asset("USD", issuer.public_key)

    tx = builder(devnet, await server.load_account(issuer.public_key)).append_payment_op(holder.public_key, usd, "10").build()
    tx.sign(issuer)
    err = await expect_failure(server, tx)
    assert err.extras["result_codes"] == {"transaction": "tx_failed", "operations": ["op_no_trust"]}
    [op] = result_of(err).result.results
    assert op.tr.payment_result.code == x.PaymentResultCode.PAYMENT_NO_TRUST

    tx = builder(devnet, await server.load_account(holder.public_key)).append_change_trust_op(usd, limit="1000").build()
    tx.sign(holder)
    await server.submit_transaction(tx)

    # the issuer pays its own asset without a trustline of its own
    tx = builder(devnet, await server.load_account(issuer.public_key)).append_payment_op(holder.public_key, usd, "10").build()
    tx.sign(issuer)
    await server.submit_transaction(tx)

    acc = (await server.load_account(holder.public_key)).raw_data
    assert acc["subentry_count"] == 1
    credit = [b for b in acc["balances"] if b["asset_type"] != "native"]
    assert credit == [
        {
            "balance": "10.0000000",
            "limit": "1000.0000000",
            "buying_liabilities": "0.0000000",
            "selling_liabilities": "0.0000000",
            "last_modified_ledger": credit[0]["last_modified_ledger"],
            "is_authorized": True,
            "is_authorized_to_maintain_liabilities": True,
            "is_clawback_enabled": False,
            "asset_type": "credit_alphanum4",
            "asset_code": "USD",
            "asset_issuer": issuer.public_key,
        }
    ]
    assert acc["balances"][-1]["asset_type"] == "native"

    # more than the holder has, then more than the limit allows
    tx = builder(devnet, await server.load_account(holder.public_key)).append_payment_op(issuer.public_key, usd, "20").build()
    tx.sign(holder)
    err = await expect_failure(server, tx)
    assert err.extras["result_codes"]["operations"] == ["op_underfunded"]
    tx = builder(devnet, await server.load_account(issuer.public_key)).append_payment_op(holder.public_key, usd, "991").build()
    tx.sign(issuer)
    err = await expect_failure(server, tx)
    assert err.extras["result_codes"]["operations"] == ["op_line_full"]

    # XLM payment that would dip below the minimum balance (2 + 1 subentry) * 0.5 XLM
    available = await native_balance(server, holder.public_key) - 3 * STROOPS // 2 - 100
    tx = (
        builder(devnet, await server.load_account(holder.public_key))
        .append_payment_op(issuer.public_key, Asset.native(), str(Decimal(available + 1) / STROOPS))
        .build()
    )
    tx.sign(holder)
    err = await expect_failure(server, tx)
    assert err.extras["result_codes"]["operations"] == ["op_underfunded"]


async def test_bad_seq_changes_nothing(devnet: StellarDevnet, server: ServerAsync, http: httpx.AsyncClient) -> None:
    alice = await fund(http)
    real = await server.load_account(alice.public_key)
    for wrong in (real.sequence + 1, real.sequence - 1):  # builder adds 1
        tx = builder(devnet, Account(alice.public_key, wrong)).append_bump_sequence_op(0).build()
        tx.sign(alice)
        err = await expect_failure(server, tx)
        assert err.extras["result_codes"] == {"transaction": "tx_bad_seq"}
        assert result_of(err).result.code == x.TransactionResultCode.txBAD_SEQ
        assert result_of(err).fee_charged.int64 == 0
    assert await sequence(server, alice.public_key) == real.sequence
    assert await native_balance(server, alice.public_key) == 10_000 * STROOPS
    with pytest.raises(NotFoundError):
        await server.transactions().transaction(tx.hash_hex()).call()


async def test_bad_signatures(devnet: StellarDevnet, server: ServerAsync, http: httpx.AsyncClient) -> None:
    alice, bob = await fund(http), await fund(http)
    account = await server.load_account(alice.public_key)
    seq = account.sequence

    tx = builder(devnet, account).append_payment_op(bob.public_key, Asset.native(), "1").build()
    tx.sign(Keypair.random())
    err = await expect_failure(server, tx)
    assert err.extras["result_codes"] == {"transaction": "tx_bad_auth"}

    # right key, wrong network passphrase
    account = await server.load_account(alice.public_key)
    other_net = TransactionBuilder(account, "Test SDF Network ; September 2015", base_fee=100)
    tx = other_net.append_payment_op(bob.public_key, Asset.native(), "1").set_timeout(60).build()
    tx.sign(alice)
    err = await expect_failure(server, tx)
    assert result_of(err).result.code == x.TransactionResultCode.txBAD_AUTH

    # a valid signature plus an unneeded one
    account = await server.load_account(alice.public_key)
    tx = builder(devnet, account).append_payment_op(bob.public_key, Asset.native(), "1").build()
    tx.sign(alice)
    tx.sign(bob)
    err = await expect_failure(server, tx)
    assert err.extras["result_codes"] == {"transaction": "tx_bad_auth_extra"}

    assert await sequence(server, alice.public_key) == seq
    assert await native_balance(server, alice.public_key) == 10_000 * STROOPS


async def test_multisig_thresholds(devnet: StellarDevnet, server: ServerAsync, http: httpx.AsyncClient) -> None:
    owner, cosigner, dest = await fund(http), Keypair.random(), await fund(http)
    tx = (
        builder(devnet, await server.load_account(owner.public_key))
        .append_ed25519_public_key_signer(cosigner.public_key, 1)
        .append_set_options_op(master_weight=1, low_threshold=1, med_threshold=2, high_threshold=2)
        .build()
    )
    tx.sign(owner)
    await server.submit_transaction(tx)
    acc = (await server.load_account(owner.public_key)).raw_data
    assert acc["thresholds"] == {"low_threshold": 1, "med_threshold": 2, "high_threshold": 2}
    assert {s["key"]: s["weight"] for s in acc["signers"]} == {
        cosigner.public_key: 1,
        owner.public_key: 1,
    }
    assert acc["subentry_count"] == 1

    seq = await sequence(server, owner.public_key)
    tx = builder(devnet, await server.load_account(owner.public_key)).append_payment_op(dest.public_key, Asset.native(), "1").build()
    tx.sign(owner)
    err = await expect_failure(server, tx)  # tx-level (low) passes, payment (medium) does not
    assert err.extras["result_codes"] == {"transaction": "tx_failed", "operations": ["op_bad_auth"]}
    assert await sequence(server, owner.public_key) == seq  # rejected, not applied

    tx.sign(cosigner)
    resp = await server.submit_transaction(tx, skip_memo_required_check=True)
    assert resp["successful"] is True and len(resp["signatures"]) == 2


async def test_insufficient_fee_and_fee_bump(devnet: StellarDevnet, server: ServerAsync, http: httpx.AsyncClient) -> None:
    alice, sponsor, bob = await fund(http), await fund(http), await fund(http)
    tx = builder(devnet, await server.load_account(alice.public_key), base_fee=99).append_payment_op(bob.public_key, Asset.native(), "1").build()
    tx.sign(alice)
    err = await expect_failure(server, tx)
    assert err.extras["result_codes"] == {"transaction": "tx_insufficient_fee"}

    r = await http.post("/_devnet/set_base_fee", json={"stroops": 200})
    assert r.json() == {"base_fee": 200}
    try:
        # Horizon reports the last *closed* ledger's fee; the module's devnet closes ledgers every
        # 100 ms, so only the value after an explicit close is certain.
        await http.post("/_devnet/close_ledgers", json={"count": 1})
        assert await server.fetch_base_fee() == 200
        stats = await server.fee_stats().call()
        assert stats["last_ledger_base_fee"] == "200"

        inner = builder(devnet, await server.load_account(alice.public_key), base_fee=100)
        inner_tx = inner.append_payment_op(bob.public_key, Asset.native(), "3").build()
        inner_tx.sign(alice)
        err = await expect_failure(server, inner_tx)
        assert err.extras["result_codes"] == {"transaction": "tx_insufficient_fee"}

        too_low = TransactionBuilder.build_fee_bump_transaction(sponsor.public_key, 150, inner_tx, devnet.network_passphrase)
        too_low.sign(sponsor)
        err = await expect_failure(server, too_low)
        assert err.extras["result_codes"] == {"transaction": "tx_insufficient_fee"}

        sponsor_before = await native_balance(server, sponsor.public_key)
        alice_before = await native_balance(server, alice.public_key)
        bump = TransactionBuilder.build_fee_bump_transaction(sponsor.public_key, 200, inner_tx, devnet.network_passphrase)
        bump.sign(sponsor)
        resp = await server.submit_transaction(bump)
    finally:
        await http.post("/_devnet/set_base_fee", json={"stroops": 100})

    assert resp["hash"] == bump.hash_hex()
    assert resp["fee_account"] == sponsor.public_key
    assert resp["source_account"] == alice.public_key
    assert resp["fee_charged"] == "400"  # 200 x (1 op + 1)
    assert resp["inner_transaction"]["hash"] == inner_tx.hash_hex()
    result = x.TransactionResult.from_xdr(resp["result_xdr"])
    assert result.result.code == x.TransactionResultCode.txFEE_BUMP_INNER_SUCCESS
    assert result.result.inner_result_pair.transaction_hash.hash.hex() == inner_tx.hash_hex()
    assert await native_balance(server, sponsor.public_key) == sponsor_before - 400
    assert await native_balance(server, alice.public_key) == alice_before - 3 * STROOPS
    assert await sequence(server, alice.public_key) == inner_tx.transaction.sequence
    by_inner = await server.transactions().transaction(inner_tx.hash_hex()).call()
    assert by_inner["fee_bump_transaction"]["hash"] == bump.hash_hex()

    # a fee bump whose inner transaction fails when applied
    inner_tx = (
        builder(devnet, await server.load_account(alice.public_key)).append_payment_op(bob.public_key, Asset("EUR", sponsor.public_key), "1").build()
    )
    inner_tx.sign(alice)
    bump = TransactionBuilder.build_fee_bump_transaction(sponsor.public_key, 100, inner_tx, devnet.network_passphrase)
    bump.sign(sponsor)
    err = await expect_failure(server, bump)
    assert err.extras["result_codes"] == {
        "transaction": "tx_fee_bump_inner_failed",
        "inner_transaction": "tx_failed",
        "operations": ["op_no_trust"],
    }
    assert await sequence(server, alice.public_key) == inner_tx.transaction.sequence


async def test_timebounds_and_ledger_bounds(devnet: StellarDevnet, server: ServerAsync, http: httpx.AsyncClient) -> None:
    alice, bob = await fund(http), await fund(http)
    seq = await sequence(server, alice.public_key)
    now = int(time.time())

    def payment(account: Account) -> TransactionBuilder:
        return TransactionBuilder(account, devnet.network_passphrase, base_fee=100).append_payment_op(bob.public_key, Asset.native(), "1")

    late = payment(await server.load_account(alice.public_key)).add_time_bounds(now - 600, now - 300).build()
    late.sign(alice)
    err = await expect_failure(server, late)
    assert err.extras["result_codes"] == {"transaction": "tx_too_late"}

    early = payment(await server.load_account(alice.public_key)).add_time_bounds(now + 600, 0).build()
    early.sign(alice)
    err = await expect_failure(server, early)
    assert err.extras["result_codes"] == {"transaction": "tx_too_early"}

    latest = (await server.ledgers().order(desc=True).limit(1).call())["_embedded"]["records"][0]
    past = payment(await server.load_account(alice.public_key)).set_timeout(60).set_ledger_bounds(0, latest["sequence"]).build()
    past.sign(alice)
    err = await expect_failure(server, past)
    assert err.extras["result_codes"] == {"transaction": "tx_too_late"}

    assert await sequence(server, alice.public_key) == seq


async def test_failed_operation_consumes_seq_and_fee_and_rolls_back(devnet: StellarDevnet, server: ServerAsync, http: httpx.AsyncClient) -> None:
    alice, bob = await fund(http), await fund(http)
    seq = await sequence(server, alice.public_key)
    tx = (
        builder(devnet, await server.load_account(alice.public_key))
        .append_payment_op(bob.public_key, Asset.native(), "100")
        .append_payment_op(bob.public_key, Asset("GBP", alice.public_key), "1")
        .build()
    )
    tx.sign(alice)
    err = await expect_failure(server, tx)
    assert err.extras["result_codes"] == {
        "transaction": "tx_failed",
        "operations": ["op_success", "op_no_trust"],
    }
    assert result_of(err).fee_charged.int64 == 200
    assert await sequence(server, alice.public_key) == seq + 1
    assert await native_balance(server, alice.public_key) == 10_000 * STROOPS - 200
    assert await native_balance(server, bob.public_key) == 10_000 * STROOPS  # op 1 rolled back

    recorded = await server.transactions().transaction(tx.hash_hex()).call()
    assert recorded["successful"] is False
    assert x.TransactionResult.from_xdr(recorded["result_xdr"]).result.code == x.TransactionResultCode.txFAILED
    default = await server.transactions().for_account(alice.public_key).call()
    assert tx.hash_hex() not in [r["hash"] for r in default["_embedded"]["records"]]
    with_failed = await server.transactions().for_account(alice.public_key).include_failed(True).call()
    assert tx.hash_hex() in [r["hash"] for r in with_failed["_embedded"]["records"]]

    # resubmitting the failed envelope returns the recorded failure, nothing is charged again
    err = await expect_failure(server, tx)
    assert err.extras["result_codes"]["operations"] == ["op_success", "op_no_trust"]
    assert await sequence(server, alice.public_key) == seq + 1
    assert await native_balance(server, alice.public_key) == 10_000 * STROOPS - 200


async def test_muxed_destination_credits_g_account(devnet: StellarDevnet, server: ServerAsync, http: httpx.AsyncClient) -> None:
    alice, bob = await fund(http), await fund(http)
    muxed = MuxedAccount(bob.public_key, 42)
    assert muxed.account_muxed.startswith("M")
    tx = builder(devnet, await server.load_account(alice.public_key)).append_payment_op(muxed, Asset.native(), "7").build()
    tx.sign(alice)
    await server.submit_transaction(tx)
    assert await native_balance(server, bob.public_key) == 10_007 * STROOPS
    with pytest.raises(BadRequestError):  # Horizon only knows G accounts
        await server.accounts().account_id(muxed.account_muxed).call()
    records = (await server.payments().for_account(bob.public_key).order(desc=True).limit(1).call())["_embedded"]["records"]
    assert records[0]["to"] == bob.public_key
    assert records[0]["to_muxed"] == muxed.account_muxed
    assert records[0]["to_muxed_id"] == "42"


async def test_memo_required(devnet: StellarDevnet, server: ServerAsync, http: httpx.AsyncClient) -> None:
    exchange, user = await fund(http), await fund(http)
    tx = builder(devnet, await server.load_account(exchange.public_key)).append_manage_data_op("config.memo_required", "1").build()
    tx.sign(exchange)
    await server.submit_transaction(tx)

    loaded = await server.load_account(exchange.public_key)
    assert loaded.raw_data["data"] == {"config.memo_required": "MQ=="}
    assert loaded.raw_data["subentry_count"] == 1
    data = await server.data(exchange.public_key, "config.memo_required").call()
    assert data == {"value": "MQ=="}

    no_memo = builder(devnet, await server.load_account(user.public_key)).append_payment_op(exchange.public_key, Asset.native(), "5").build()
    no_memo.sign(user)
    with pytest.raises(AccountRequiresMemoError) as info:
        await server.submit_transaction(no_memo, skip_memo_required_check=False)
    assert info.value.account_id == exchange.public_key

    with_memo = (
        builder(devnet, await server.load_account(user.public_key))
        .append_payment_op(exchange.public_key, Asset.native(), "5")
        .add_text_memo("deposit-77")
        .build()
    )
    with_memo.sign(user)
    resp = await server.submit_transaction(with_memo, skip_memo_required_check=False)
    assert (resp["memo_type"], resp["memo"]) == ("text", "deposit-77")
    assert await native_balance(server, exchange.public_key) == 10_005 * STROOPS - 100


async def test_lost_response_then_identical_resubmit_applies_once(devnet: StellarDevnet, server: ServerAsync, http: httpx.AsyncClient) -> None:
    alice, bob = await fund(http), await fund(http)
    seq = await sequence(server, alice.public_key)
    tx = builder(devnet, await server.load_account(alice.public_key)).append_payment_op(bob.public_key, Asset.native(), "25").build()
    tx.sign(alice)
    envelope = tx.to_xdr()

    r = await http.post("/_devnet/fail_next_submissions", json={"count": 1, "status": 504})
    assert r.json()["pending_failures"] == 1
    with pytest.raises(BadResponseError) as info:
        await server.submit_transaction(tx, skip_memo_required_check=True)
    assert info.value.status == 504
    assert info.value.type == "https://stellar.org/horizon-errors/timeout"

    # the transaction did land even though the response was lost
    landed = await server.transactions().transaction(tx.hash_hex()).call()
    assert landed["successful"] is True
    assert await sequence(server, alice.public_key) == seq + 1

    assert tx.to_xdr() == envelope  # the identical signed bytes go out again
    again = await server.submit_transaction(tx, skip_memo_required_check=True)
    assert (again["hash"], again["ledger"]) == (tx.hash_hex(), landed["ledger"])
    assert await sequence(server, alice.public_key) == seq + 1
    assert await native_balance(server, bob.public_key) == 10_025 * STROOPS
    assert await native_balance(server, alice.public_key) == 9_975 * STROOPS - 100


async def test_account_merge(devnet: StellarDevnet, server: ServerAsync, http: httpx.AsyncClient) -> None:
    keeper, lost = await fund(http), await fund(http)
    keeper_before = await native_balance(server, keeper.public_key)

    # a trustline is a subentry: the merge must fail (and still charge the fee)
    issuer = await fund(http)
    tx = builder(devnet, await server.load_account(lost.public_key)).append_change_trust_op(Asset("ABC", issuer.public_key)).build()
    tx.sign(lost)
    await server.submit_transaction(tx)
    tx = builder(devnet, await server.load_account(lost.public_key)).append_account_merge_op(keeper.public_key).build()
    tx.sign(lost)
    err = await expect_failure(server, tx)
    assert err.extras["result_codes"]["operations"] == ["op_has_sub_entries"]

    tx = (
        builder(devnet, await server.load_account(lost.public_key))
        .append_change_trust_op(Asset("ABC", issuer.public_key), limit="0")
        .append_account_merge_op(MuxedAccount(keeper.public_key, 7))
        .build()
    )
    tx.sign(lost)
    lost_balance = await native_balance(server, lost.public_key)
    resp = await server.submit_transaction(tx, skip_memo_required_check=True)
    [_, merge] = x.TransactionResult.from_xdr(resp["result_xdr"]).result.results
    assert merge.tr.account_merge_result.source_account_balance.int64 == lost_balance - 200
    assert await native_balance(server, keeper.public_key) == keeper_before + lost_balance - 200
    with pytest.raises(NotFoundError):
        await server.load_account(lost.public_key)


async def test_async_submission_and_background_closer(devnet: StellarDevnet, server: ServerAsync, http: httpx.AsyncClient) -> None:
    alice, bob = await fund(http), await fund(http)
    first = (await server.ledgers().order(desc=True).limit(1).call())["_embedded"]["records"][0]
    tx = builder(devnet, await server.load_account(alice.public_key)).append_payment_op(bob.public_key, Asset.native(), "2").build()
    tx.sign(alice)
    resp = await server.submit_transaction_async(tx, skip_memo_required_check=True)
    assert resp == {"tx_status": "PENDING", "hash": tx.hash_hex()}
    deadline = time.monotonic() + 5
    while True:
        try:
            landed = await server.transactions().transaction(tx.hash_hex()).call()
            break
        except NotFoundError:
            assert time.monotonic() < deadline, "background closer never closed the ledger"
    assert landed["successful"] is True and landed["ledger"] > first["sequence"]
    closed = await server.ledgers().order(desc=True).limit(1).call()
    assert closed["_embedded"]["records"][0]["sequence"] > first["sequence"]

    bad = builder(devnet, Account(alice.public_key, 1)).append_bump_sequence_op(0).build()
    bad.sign(alice)
    r = await http.post("/transactions_async", data={"tx": bad.to_xdr()})
    assert r.status_code == 400 and r.json()["tx_status"] == "ERROR"
    error = x.TransactionResult.from_xdr(r.json()["error_result_xdr"])
    assert error.result.code == x.TransactionResultCode.txBAD_SEQ


async def test_malformed_and_missing_envelope(server: ServerAsync, http: httpx.AsyncClient) -> None:
    r = await http.post("/transactions", data={"tx": "not-xdr"})
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"] == "https://stellar.org/horizon-errors/transaction_malformed"
    r = await http.post("/transactions", data={})
    assert r.status_code == 400 and r.json()["extras"]["invalid_field"] == "tx"
    r = await http.get("/accounts/not-an-account")
    assert r.status_code == 400


async def test_manual_closing_and_devnet_clock(http: httpx.AsyncClient) -> None:
    async with run_stellar_devnet(port=0, close_interval_ms=0, network_passphrase="Other Devnet ; 1") as d:
        assert d.network_passphrase == "Other Devnet ; 1"
        async with ServerAsync(d.url, client=AiohttpClient()) as s, httpx.AsyncClient(base_url=d.url) as c:
            status = (await c.get("/_devnet/status")).json()
            closed = await c.post("/_devnet/close_ledgers", json={"count": 3})
            assert closed.json()["latest_ledger"] == status["latest_ledger"] + 3

            kp = Keypair.random()
            assert (await c.get("/friendbot", params={"addr": kp.public_key})).status_code == 200
            # pending async submissions wait for an explicit close in manual mode
            tx = TransactionBuilder(await s.load_account(kp.public_key), d.network_passphrase, 100)
            tx = tx.append_bump_sequence_op(0).set_timeout(30).build()
            tx.sign(kp)
            assert (await s.submit_transaction_async(tx))["tx_status"] == "PENDING"
            with pytest.raises(NotFoundError):
                await s.transactions().transaction(tx.hash_hex()).call()
            await c.post("/_devnet/close_ledgers", json={"count": 1})
            assert (await s.transactions().transaction(tx.hash_hex()).call())["successful"]

            # move the devnet clock: a 30 s timeout built from the wall clock is now too late
            r = await c.post("/_devnet/advance_time", json={"seconds": 3600})
            assert r.json()["now"] >= int(time.time()) + 3590
            tx = TransactionBuilder(await s.load_account(kp.public_key), d.network_passphrase, 100)
            tx = tx.append_bump_sequence_op(0).set_timeout(30).build()
            tx.sign(kp)
            with pytest.raises(BadRequestError) as info:
                await s.submit_transaction(tx)
            assert info.value.extras["result_codes"] == {"transaction": "tx_too_late"}
            assert (await c.post("/_devnet/set_time", json={"unix": 1})).status_code == 400

            envelope = TransactionEnvelope.from_xdr(tx.to_xdr(), d.network_passphrase)
            assert envelope.hash_hex() == tx.hash_hex()
