"""The Solana adapter against the LiteSVM devnet, with a local ed25519 signer.

The devnet's slots move only when a test says so (slot_ms=0), so blockhash windows, commitment
levels and expiry are deterministic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.models import TxOpts
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import CreateAccountParams, create_account
from solders.transaction import Transaction
from spl.token.constants import TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID
from spl.token.instructions import (
    create_idempotent_associated_token_account,
    get_associated_token_address,
    initialize_mint2,
    mint_to_checked,
)
from spl.token.models import InitializeMint2Params, MintToCheckedParams

from chains.base import Memo, SignedTransfer, TransferIntent
from chains.solana import SolanaChain
from core.errors import (
    BelowAccountMinimum,
    ChainUnavailable,
    InsufficientFunds,
    InvalidMemo,
    InvalidRecipient,
    NotAvailable,
    SigningFailed,
    SubmissionFailed,
)
from core.settings import AssetSpec, SolanaChainSettings, TokenSettings
from devnet.faultproxy import FaultProxy
from devnet.solana import SolanaDevnet, run_solana_devnet
from models.payloads import OnChainState

SOL = 1_000_000_000
CU_PRICE, CU_LIMIT = 5_000, 200_000  # priority fee = ceil(5000 x 200000 / 1e6) = 1000 lamports
PRIORITY = 1_000


# ----------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
async def devnet() -> AsyncIterator[SolanaDevnet]:
    async with run_solana_devnet(host="127.0.0.1", port=0, slot_ms=0) as d:
        yield d


@pytest.fixture(scope="module")
async def rpc(devnet: SolanaDevnet) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(devnet.url, commitment=Confirmed) as c:
        yield c


def make_chain(devnet: SolanaDevnet, **overrides) -> SolanaChain:  # type: ignore[no-untyped-def]
    fields = {
        "rpc_url": devnet.url,
        "compute_unit_price_micro_lamports": CU_PRICE,
        "compute_unit_limit": CU_LIMIT,
        "faucet_enabled": True,
        # Slots move only when a test says so: "confirmed" lands at once (finalized is tested apart).
        "commitment": "confirmed",
    } | overrides
    return SolanaChain("solana", SolanaChainSettings(**fields))


@pytest.fixture(scope="module")
def chain(devnet: SolanaDevnet) -> SolanaChain:
    return make_chain(devnet)


def signer(kp: Keypair):  # type: ignore[no-untyped-def]
    async def sign(message: bytes) -> bytes:
        return bytes(kp.sign_message(message))

    return sign


async def funded(chain: SolanaChain, lamports: int = 10 * SOL) -> Keypair:
    kp = Keypair()
    await chain.faucet(str(kp.pubkey()), chain.asset("SOL"), lamports)
    return kp


async def lamports(rpc: AsyncClient, key: Pubkey | str) -> int:
    return (await rpc.get_balance(Pubkey.from_string(str(key)), Confirmed)).value


def intent(sender: Keypair, to: Pubkey | str, amount: int, asset: AssetSpec, memo: Memo | None = None) -> TransferIntent:
    return TransferIntent(sender=str(sender.pubkey()), destination=str(to), asset=asset, amount=amount, memo=memo)


async def send_signed(rpc: AsyncClient, payer: Keypair, instructions, extra=()) -> None:  # type: ignore[no-untyped-def]
    recent = (await rpc.get_latest_blockhash(Confirmed)).value.blockhash
    tx = Transaction.new_signed_with_payer(instructions, payer.pubkey(), [payer, *extra], recent)
    await rpc.send_transaction(tx, TxOpts(preflight_commitment=Confirmed))


async def create_mint(rpc: AsyncClient, authority: Keypair, program: Pubkey, decimals: int) -> Pubkey:
    mint = Keypair()
    rent = (await rpc.get_minimum_balance_for_rent_exemption(82)).value
    await send_signed(
        rpc,
        authority,
        [
            create_account(CreateAccountParams(from_pubkey=authority.pubkey(), to_pubkey=mint.pubkey(), lamports=rent, space=82, owner=program)),
            initialize_mint2(InitializeMint2Params(decimals=decimals, program_id=program, mint=mint.pubkey(), mint_authority=authority.pubkey())),
        ],
        (mint,),
    )
    return mint.pubkey()


async def mint_to(rpc: AsyncClient, authority: Keypair, program: Pubkey, mint: Pubkey, owner: Pubkey, amount: int, decimals: int) -> None:
    await send_signed(
        rpc,
        authority,
        [
            create_idempotent_associated_token_account(authority.pubkey(), owner, mint, program),
            mint_to_checked(
                MintToCheckedParams(
                    program_id=program,
                    mint=mint,
                    dest=get_associated_token_address(owner, mint, program),
                    mint_authority=authority.pubkey(),
                    amount=amount,
                    decimals=decimals,
                )
            ),
        ],
    )


async def token_amount(rpc: AsyncClient, owner: Pubkey, mint: Pubkey, program: Pubkey) -> int | None:
    account = (await rpc.get_account_info(get_associated_token_address(owner, mint, program), Confirmed)).value
    return None if account is None else int.from_bytes(bytes(account.data)[64:72], "little")


def off_curve_address() -> Pubkey:
    pda, _ = Pubkey.find_program_address([b"custody-test"], TOKEN_PROGRAM_ID)
    assert not pda.is_on_curve()
    return pda


# ----------------------------------------------------------------------------- addresses, memos


def test_addresses_and_memos(chain: SolanaChain) -> None:
    kp = Keypair()
    assert chain.address_from_public_key(bytes(kp.pubkey())) == str(kp.pubkey())
    assert chain.normalize_address(f" {kp.pubkey()} ") == str(kp.pubkey())
    for bad in ["", "0x000000000000000000000000000000000000dEaD", "not-base58-OIl0" * 3, str(kp.pubkey())[:-2]]:
        with pytest.raises(InvalidRecipient):
            chain.normalize_address(bad)
    with pytest.raises(InvalidRecipient, match="off-curve"):
        chain.normalize_address(str(off_curve_address()))
    with pytest.raises(InvalidRecipient, match="program id"):
        chain.normalize_address("11111111111111111111111111111111")
    assert chain.validate_memo(Memo("text", "invoice 42")) == Memo("text", "invoice 42")
    assert chain.validate_memo(Memo("text", "é" * 283)).value == "é" * 283  # 566 bytes
    with pytest.raises(InvalidMemo):
        chain.validate_memo(Memo("text", "x" * 567))
    for kind in ("id", "hash"):
        with pytest.raises(InvalidMemo):
            chain.validate_memo(Memo(kind, "12345"))
    assert chain.family == "solana" and chain.key_scheme == "ed25519" and chain.replaceable_in_slot is False
    assert chain.asset("SOL") == AssetSpec(symbol="SOL", decimals=9)


# ----------------------------------------------------------------------------- SOL


async def test_sol_transfer_lands_and_sender_pays_exact_fee(chain: SolanaChain, rpc: AsyncClient) -> None:
    sender, dest = await funded(chain), Keypair()
    sol = chain.asset("SOL")
    rent0 = (await rpc.get_minimum_balance_for_rent_exemption(0)).value
    assert await chain.balance(str(sender.pubkey()), sol) == 10 * SOL - rent0
    transfer = intent(sender, dest.pubkey(), 2 * SOL, sol, Memo("text", "withdrawal w-1"))
    await chain.preflight(transfer)
    assert await chain.estimate_max_fee(transfer) == 5_000 + PRIORITY
    assert await chain.next_sequence(transfer.sender, None) is None
    assert await chain.settled_sequence(transfer.sender) is None

    signed = await chain.sign_transfer(transfer, None, signer(sender))
    assert signed.sequence is None and signed.max_fee == 5_000 + PRIORITY
    tx = Transaction.from_bytes(bytes.fromhex(signed.raw_tx))
    assert str(tx.signatures[0]) == signed.tx_hash and tx.verify() is None
    assert signed.fee_params["last_valid_block_height"] > 0 and signed.fee_params["blockhash"]
    assert not await chain.is_known(signed.tx_hash)
    assert (await chain.transfer_status(transfer, [signed])).state == OnChainState.PENDING

    assert await chain.broadcast(signed) == "accepted"
    status = await chain.transfer_status(transfer, [signed])
    assert status.state == OnChainState.CONFIRMED and status.tx_hash == signed.tx_hash
    assert status.fee_paid == 5_000 + PRIORITY and status.block_number is not None
    assert await lamports(rpc, dest.pubkey()) == 2 * SOL
    assert await lamports(rpc, sender.pubkey()) == 10 * SOL - 2 * SOL - 5_000 - PRIORITY
    assert await chain.is_known(signed.tx_hash)
    # the memo went on chain through the Memo program
    landed = (await rpc.get_transaction(Signature.from_string(signed.tx_hash), commitment=Confirmed)).value
    assert any("withdrawal w-1" in line for line in landed.transaction.meta.log_messages)

    # resending the landed bytes: "known", applied once
    assert await chain.broadcast(signed) == "known"
    assert await lamports(rpc, dest.pubkey()) == 2 * SOL


async def test_no_priority_fee_means_base_fee_only(devnet: SolanaDevnet, rpc: AsyncClient) -> None:
    chain = make_chain(devnet, compute_unit_price_micro_lamports=0)
    sender, dest = await funded(chain), Keypair()
    transfer = intent(sender, dest.pubkey(), SOL, chain.asset("SOL"))
    signed = await chain.sign_transfer(transfer, None, signer(sender))
    assert signed.max_fee == 5_000
    await chain.broadcast(signed)
    assert (await chain.transfer_status(transfer, [signed])).fee_paid == 5_000
    assert await lamports(rpc, sender.pubkey()) == 9 * SOL - 5_000


async def test_preflight_refuses_below_rent_exemption_and_off_curve(chain: SolanaChain, rpc: AsyncClient) -> None:
    sender = await funded(chain)
    sol = chain.asset("SOL")
    rent0 = (await rpc.get_minimum_balance_for_rent_exemption(0)).value
    fresh = Keypair().pubkey()
    with pytest.raises(BelowAccountMinimum, match="rent-exempt minimum") as exc:
        await chain.preflight(intent(sender, fresh, rent0 - 1, sol))
    assert exc.value.details["minimum"] == str(rent0)
    await chain.preflight(intent(sender, fresh, rent0, sol))
    # an existing account can receive any amount
    existing = await funded(chain, SOL)
    await chain.preflight(intent(sender, existing.pubkey(), 1, sol))
    with pytest.raises(InvalidRecipient, match="off-curve"):
        await chain.preflight(intent(sender, off_curve_address(), SOL, sol))


async def test_off_curve_sol_destinations_only_when_explicitly_allowed(devnet: SolanaDevnet) -> None:
    permissive = make_chain(devnet, allow_off_curve_sol_destinations=True)
    vault = off_curve_address()
    assert permissive.normalize_address(str(vault)) == str(vault)
    sender = await funded(permissive)
    await permissive.preflight(intent(sender, vault, SOL, permissive.asset("SOL")))
    with pytest.raises(InvalidRecipient, match="off-curve"):
        await make_chain(devnet).preflight(intent(sender, vault, SOL, permissive.asset("SOL")))


async def test_balance_keeps_the_sender_rent_exempt(chain: SolanaChain, rpc: AsyncClient) -> None:
    rent0 = (await rpc.get_minimum_balance_for_rent_exemption(0)).value
    sol = chain.asset("SOL")
    with pytest.raises(SubmissionFailed, match="InsufficientFundsForRent"):
        await funded(chain, rent0 - 1)  # the runtime itself refuses a new account below rent exemption
    assert await chain.balance(str((await funded(chain, rent0)).pubkey()), sol) == 0
    assert await chain.balance(str((await funded(chain, rent0 + 7)).pubkey()), sol) == 7
    assert await chain.balance(str(Keypair().pubkey()), sol) == 0  # no account at all

    sender = await funded(chain, SOL)
    spendable = await chain.balance(str(sender.pubkey()), sol)
    assert spendable == SOL - rent0
    # spending exactly spendable - fee leaves the sender at the rent-exempt minimum, and the runtime agrees
    transfer = intent(sender, Keypair().pubkey(), spendable - await chain.estimate_max_fee(intent(sender, Keypair().pubkey(), 1, sol)), sol)
    signed = await chain.sign_transfer(transfer, None, signer(sender))
    assert await chain.broadcast(signed) == "accepted"
    assert (await chain.transfer_status(transfer, [signed])).state == OnChainState.CONFIRMED
    assert await lamports(rpc, sender.pubkey()) == rent0
    assert await chain.balance(str(sender.pubkey()), sol) == 0
    # one lamport more than spendable would have left it below rent exemption: refused in preflight, not applied
    too_much = intent(sender, Keypair().pubkey(), rent0, sol)
    signed = await chain.sign_transfer(too_much, None, signer(sender))
    with pytest.raises(InsufficientFunds):
        await chain.broadcast(signed)
    assert not await chain.is_known(signed.tx_hash)
    assert await lamports(rpc, sender.pubkey()) == rent0


async def test_signer_returning_a_wrong_signature_is_refused(chain: SolanaChain) -> None:
    sender = await funded(chain, SOL)
    transfer = intent(sender, Keypair().pubkey(), SOL // 2, chain.asset("SOL"))
    with pytest.raises(SigningFailed):
        await chain.sign_transfer(transfer, None, signer(Keypair()))  # another key


# ----------------------------------------------------------------------------- lost sends, expiry


async def test_lost_send_stays_pending_and_the_same_bytes_land_once(chain: SolanaChain, devnet: SolanaDevnet, rpc: AsyncClient) -> None:
    sender, dest = await funded(chain), Keypair()
    transfer = intent(sender, dest.pubkey(), SOL, chain.asset("SOL"))
    signed = await chain.sign_transfer(transfer, None, signer(sender))
    await devnet.drop_next_sends(1)
    assert await chain.broadcast(signed) == "accepted"  # the node said yes, the leader never saw it
    await devnet.advance_slots(3)
    status = await chain.transfer_status(transfer, [signed])
    assert status.state == OnChainState.PENDING and status.block_number is None
    assert signed.tx_hash in (await devnet.state())["lostSends"]
    assert await lamports(rpc, dest.pubkey()) == 0

    assert await chain.broadcast(signed) == "accepted"  # the workflow re-sends the same bytes
    assert await chain.broadcast(signed) == "known"
    await devnet.advance_slots(1)
    assert await chain.broadcast(signed) == "known"
    assert (await chain.transfer_status(transfer, [signed])).state == OnChainState.CONFIRMED
    assert await lamports(rpc, dest.pubkey()) == SOL
    assert await lamports(rpc, sender.pubkey()) == 9 * SOL - 5_000 - PRIORITY


async def test_forced_expiry_is_expired_only_past_the_finalized_height(chain: SolanaChain, devnet: SolanaDevnet, rpc: AsyncClient) -> None:
    sender, dest = await funded(chain), Keypair()
    transfer = intent(sender, dest.pubkey(), SOL, chain.asset("SOL"))
    never_sent = await chain.sign_transfer(transfer, None, signer(sender))
    await devnet.advance_slots(1)
    dropped = await chain.sign_transfer(transfer, None, signer(sender))  # a second, later window
    assert dropped.tx_hash != never_sent.tx_hash
    await devnet.drop_next_sends(1)
    assert await chain.broadcast(dropped) == "accepted"

    # inside the window (and even 150 blocks on, while the finalized height has not passed it)
    await devnet.advance_slots(151)
    status = await chain.transfer_status(transfer, [never_sent, dropped])
    assert status.state == OnChainState.PENDING and status.block_number is None
    # the blockhash is gone at the tip, but that alone proves nothing
    assert await chain.broadcast(dropped) == "blockhash_not_found"

    await devnet.expire_blockhashes()
    status = await chain.transfer_status(transfer, [never_sent, dropped])
    assert status.state == OnChainState.EXPIRED and status.tx_hash == dropped.tx_hash
    # an attempt whose window is unknown is never declared dead
    unknown = dataclasses.replace(dropped, fee_params={})
    assert (await chain.transfer_status(transfer, [never_sent, unknown])).state == OnChainState.PENDING

    # and a fresh signature with a fresh blockhash is the same transfer, landing once
    fresh = await chain.sign_transfer(transfer, None, signer(sender))
    assert await chain.broadcast(fresh) == "accepted"
    status = await chain.transfer_status(transfer, [never_sent, dropped, fresh])
    assert status.state == OnChainState.CONFIRMED and status.tx_hash == fresh.tx_hash
    assert await lamports(rpc, dest.pubkey()) == SOL


async def test_a_landed_attempt_is_never_expired(chain: SolanaChain, devnet: SolanaDevnet, rpc: AsyncClient) -> None:
    sender, dest = await funded(chain), Keypair()
    transfer = intent(sender, dest.pubkey(), SOL, chain.asset("SOL"))
    landed = await chain.sign_transfer(transfer, None, signer(sender))
    assert await chain.broadcast(landed) == "accepted"
    await devnet.expire_blockhashes()
    status = await chain.transfer_status(transfer, [landed])
    assert status.state == OnChainState.CONFIRMED and status.tx_hash == landed.tx_hash
    # past its window a node checks the blockhash age first; the status still says it landed
    assert await chain.broadcast(landed) == "blockhash_not_found"
    assert (await chain.transfer_status(transfer, [landed])).state == OnChainState.CONFIRMED
    assert await lamports(rpc, dest.pubkey()) == SOL


async def test_finalized_commitment_keeps_a_landed_attempt_pending_until_finalized(devnet: SolanaDevnet, rpc: AsyncClient) -> None:
    chain = make_chain(devnet, commitment="finalized")
    sender, dest = await funded(chain), Keypair()
    transfer = intent(sender, dest.pubkey(), SOL, chain.asset("SOL"))
    signed = await chain.sign_transfer(transfer, None, signer(sender))  # a finalized blockhash
    assert await chain.broadcast(signed) == "accepted"  # finalized preflight matches it
    status = await chain.transfer_status(transfer, [signed])
    # landed, not final: PENDING with a block number, so the workflow neither re-signs nor bumps
    assert status.state == OnChainState.PENDING and status.block_number is not None
    # a resend before finalization is forwarded and dropped by the leader: never applied twice
    assert await chain.broadcast(signed) == "accepted"
    await devnet.advance_slots(32)
    status = await chain.transfer_status(transfer, [signed])
    assert status.state == OnChainState.CONFIRMED and status.fee_paid == 5_000 + PRIORITY
    assert await chain.broadcast(signed) == "known"
    assert await lamports(rpc, dest.pubkey()) == SOL


async def test_a_transfer_that_fails_on_chain_is_reverted(chain: SolanaChain, rpc: AsyncClient) -> None:
    sender = await funded(chain, SOL)
    transfer = intent(sender, Keypair().pubkey(), 5 * SOL, chain.asset("SOL"))
    signed = await chain.sign_transfer(transfer, None, signer(sender))
    with pytest.raises(InsufficientFunds):
        await chain.broadcast(signed)  # refused in preflight: not applied
    assert await lamports(rpc, sender.pubkey()) == SOL
    # the same bytes pushed past preflight land, fail, and pay the fee
    await rpc.send_raw_transaction(bytes.fromhex(signed.raw_tx), TxOpts(skip_preflight=True))
    status = await chain.transfer_status(transfer, [signed])
    assert status.state == OnChainState.REVERTED and status.fee_paid == 5_000 + PRIORITY
    assert "InstructionError" in status.detail


@pytest.mark.parametrize(
    "fault",
    [{"action": "error", "status": 503}, {"action": "respond", "rpc_result": None}],
    ids=["getTransaction-fails", "getTransaction-null"],
)
async def test_a_landed_transfer_whose_fee_cannot_be_read_now_is_read_again_not_completed_without_its_fee(
    devnet: SolanaDevnet, rpc: AsyncClient, fault: dict
) -> None:
    """Found by `custody chaos`: getTransaction failing on the wire (or answering null) just as
    the status turned final made transfer_status answer CONFIRMED with no fee, so the withdrawal
    completed with fee_paid unset and reconciliation showed the fee as drift. A fee that cannot
    be read yet is a transient error: the confirmation is simply read again."""
    async with FaultProxy(devnet.url) as proxy:
        chain = make_chain(devnet, rpc_url=proxy.url)
        sender = await funded(chain)
        transfer = intent(sender, Keypair().pubkey(), SOL, chain.asset("SOL"))
        signed = await chain.sign_transfer(transfer, None, signer(sender))
        assert await chain.broadcast(signed) == "accepted"
        proxy.add(rpc_method="getTransaction", count=1, **fault)
        with pytest.raises(ChainUnavailable):
            await chain.transfer_status(transfer, [signed])
        assert proxy.injected() == 1
        status = await chain.transfer_status(transfer, [signed])
        assert status.state == OnChainState.CONFIRMED and status.fee_paid == 5_000 + PRIORITY


# ----------------------------------------------------------------------------- SPL


@pytest.mark.parametrize("program", [TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID], ids=["spl-token", "token-2022"])
async def test_spl_transfer_creates_the_recipient_ata_and_counts_its_rent(devnet: SolanaDevnet, rpc: AsyncClient, program: Pubkey) -> None:
    base = make_chain(devnet)
    authority = await funded(base)
    mint = await create_mint(rpc, authority, program, decimals=6)
    chain = make_chain(devnet, tokens={"TUSD": TokenSettings(address=str(mint), decimals=6)})
    usd = chain.asset("TUSD")
    sender, recipient = await funded(chain), Keypair()
    assert await chain.balance(str(sender.pubkey()), usd) == 0  # no ATA yet
    await mint_to(rpc, authority, program, mint, sender.pubkey(), 5_000_000, 6)
    assert await chain.balance(str(sender.pubkey()), usd) == 5_000_000

    transfer = intent(sender, recipient.pubkey(), 1_234_500, usd, Memo("text", "spl memo"))
    await chain.preflight(transfer)
    ata_len = 165 if program == TOKEN_PROGRAM_ID else 170  # Token-2022 ATAs carry ImmutableOwner
    ata_rent = (await rpc.get_minimum_balance_for_rent_exemption(ata_len)).value
    assert await chain.estimate_max_fee(transfer) == 5_000 + PRIORITY + ata_rent

    before = await lamports(rpc, sender.pubkey())
    signed = await chain.sign_transfer(transfer, None, signer(sender))
    assert signed.max_fee == 5_000 + PRIORITY + ata_rent
    assert await chain.broadcast(signed) == "accepted"
    status = await chain.transfer_status(transfer, [signed])
    assert status.state == OnChainState.CONFIRMED and status.fee_paid == 5_000 + PRIORITY
    assert await token_amount(rpc, recipient.pubkey(), mint, program) == 1_234_500
    assert await chain.balance(str(sender.pubkey()), usd) == 5_000_000 - 1_234_500
    ata = (await rpc.get_account_info(get_associated_token_address(recipient.pubkey(), mint, program))).value
    assert ata.owner == program and len(bytes(ata.data)) == ata_len and ata.lamports == ata_rent
    # the sender paid exactly the fee and the new account's rent: what the reservation held
    assert before - await lamports(rpc, sender.pubkey()) == signed.max_fee

    # the recipient's ATA now exists: no rent in the next estimate, and a second transfer just moves tokens
    again = intent(sender, recipient.pubkey(), 1_000, usd)
    assert await chain.estimate_max_fee(again) == 5_000 + PRIORITY
    signed2 = await chain.sign_transfer(again, None, signer(sender))
    await chain.broadcast(signed2)
    assert (await chain.transfer_status(again, [signed2])).state == OnChainState.CONFIRMED
    assert await token_amount(rpc, recipient.pubkey(), mint, program) == 1_235_500


async def test_spl_configuration_errors_and_faucet(devnet: SolanaDevnet, rpc: AsyncClient) -> None:
    base = make_chain(devnet)
    authority = await funded(base)
    mint = await create_mint(rpc, authority, TOKEN_PROGRAM_ID, decimals=6)
    sender = await funded(base)
    wrong = make_chain(devnet, tokens={"BAD": TokenSettings(address=str(mint), decimals=9)})
    with pytest.raises(SubmissionFailed, match="decimals"):
        await wrong.preflight(intent(sender, Keypair().pubkey(), 1, wrong.asset("BAD")))
    missing = make_chain(devnet, tokens={"GONE": TokenSettings(address=str(Keypair().pubkey()), decimals=6)})
    with pytest.raises(SubmissionFailed, match="does not exist"):
        await missing.preflight(intent(sender, Keypair().pubkey(), 1, missing.asset("GONE")))
    ok = make_chain(devnet, tokens={"TUSD": TokenSettings(address=str(mint), decimals=6)})
    with pytest.raises(InvalidRecipient, match="off-curve"):
        await ok.preflight(intent(sender, off_curve_address(), 1, ok.asset("TUSD")))
    with pytest.raises(NotAvailable, match="no mint authority"):
        await ok.faucet(str(sender.pubkey()), ok.asset("TUSD"), 1)


async def test_client_is_made_lazily_per_event_loop(devnet: SolanaDevnet) -> None:
    chain = make_chain(devnet)
    assert not chain._clients
    await chain.balance(str(Keypair().pubkey()), chain.asset("SOL"))
    assert len(chain._clients) == 1
    await chain.aclose()
    assert not chain._clients


async def test_unreachable_node_is_chain_unavailable() -> None:
    from core.errors import ChainUnavailable

    chain = SolanaChain("solana", SolanaChainSettings(rpc_url="http://127.0.0.1:9"))
    with pytest.raises(ChainUnavailable):
        await chain.balance(str(Keypair().pubkey()), chain.asset("SOL"))
    signed = SignedTransfer(tx_hash=str(Signature.default()), raw_tx="00", sequence=None, max_fee=0)
    with pytest.raises(ChainUnavailable):
        await chain.broadcast(signed)
    await chain.aclose()


async def test_an_attempt_signed_before_a_network_reset_is_expired(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """After a reset (a test validator restarted empty) heights begin again far below the
    attempt's window: its blockhash belongs to a chain that is gone, so it is EXPIRED (and the
    withdrawal re-signs on the new chain) instead of PENDING for as long as heights need to
    climb back."""
    from devnet import local

    port = local.free_port()
    async with run_solana_devnet(host="127.0.0.1", port=port, slot_ms=0) as before:
        await before.advance_slots(400)
        chain = make_chain(before)
        sender, dest = await funded(chain), Keypair()
        transfer = intent(sender, dest.pubkey(), SOL, chain.asset("SOL"))
        signed = await chain.sign_transfer(transfer, None, signer(sender))
        await before.drop_next_sends(1)  # accepted, never applied
        assert await chain.broadcast(signed) == "accepted"
        assert (await chain.transfer_status(transfer, [signed])).state == OnChainState.PENDING
    async with run_solana_devnet(host="127.0.0.1", port=port, slot_ms=0) as after:
        chain = make_chain(after)
        status = await chain.transfer_status(transfer, [signed])
        assert status.state == OnChainState.EXPIRED and "reset" in status.detail, status
        await after.advance_slots(10)  # a live chain a few blocks on: still nowhere near our window
        assert (await chain.transfer_status(transfer, [signed])).state == OnChainState.EXPIRED
