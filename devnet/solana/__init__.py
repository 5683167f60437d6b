"""Solana JSON-RPC devnet: the real SVM (``solders.litesvm.LiteSVM``) behind Agave's JSON-RPC wire format.

The stock ``solana.rpc.async_api.AsyncClient`` talks to it as to a validator: real transactions, real
ed25519 signature checks, SPL Token / Token-2022 / Associated Token Account / Memo programs, real fees
(5,000 lamports per signature + ceil(CU price x CU limit / 1e6)), Agave's error codes and texts, results
serialised by solders' own RPC response types.

Launch::

    python -m devnet.solana --host 127.0.0.1 --port 8899 [--ledger-slot-ms 400] [--finalization-depth 32] \
        [--state-dir .data/solana]

    from devnet.solana import run_solana_devnet
    async with run_solana_devnet(host="127.0.0.1", port=0, slot_ms=0) as devnet:
        client = AsyncClient(devnet.url)
        await devnet.advance_slots(5)

    with SolanaDevnet(port=0) as devnet: ...          # synchronous form

State
    In memory unless a state directory is given (``--state-dir``, ``state_dir=``): then the chain is kept in
    a SQLite file there (:mod:`devnet.solana.persistence`) and a restart continues it: accounts, token
    accounts and mints, the faucet, transaction history and statuses, the recent blockhashes, slot and block
    height (never going back, and never handing an old blockhash out again).

Chain-time model
    One block per slot. Every slot (ticker, default 400 ms; ``slot_ms=0`` = only manual) rotates the blockhash,
    advances slot and block height by one and moves the Clock sysvar (unix time = start + slot x slot_ms).
    Block height starts ~5% below the slot (as on mainnet). A blockhash that became the latest at block height
    ``h`` is accepted while ``getBlockHeight() <= h + 150`` (its ``lastValidBlockHeight``); older or unknown
    ones fail with ``BlockhashNotFound``. Banks per commitment: ``processed`` = ``confirmed`` = tip
    (``confirmation_depth`` 0), ``finalized`` = tip - 32 slots. ``getLatestBlockhash`` and preflight use the
    bank of the requested commitment (default ``finalized``), so a ``confirmed`` blockhash sent with a
    ``finalized`` preflight fails with "Blockhash not found", exactly like a real node.

Duplicate sends
    A landed transaction never applies twice. Re-sending it with preflight at a commitment that already sees
    it returns -32002 "Transaction simulation failed: This transaction has already been processed"; with
    ``skipPreflight`` (or a preflight bank that cannot see it yet) the signature is returned and the leader
    drops the copy. Transactions that fail before paying a fee (bad signature with skipPreflight, unknown
    blockhash, unfunded fee payer) never land: their status stays null. Transactions that fail during
    execution land with ``err`` set and pay the fee (sent with skipPreflight; with preflight they are refused).

JSON-RPC methods
    getAccountInfo (binary/base58/base64/base64+zstd/jsonParsed for SPL token accounts and mints, dataSlice),
    getBalance, getBlockHeight, getEpochInfo, getEpochSchedule, getFeeForMessage, getGenesisHash, getHealth,
    getIdentity, getLatestBlockhash, getMinimumBalanceForRentExemption (from the SVM rent sysvar),
    getMultipleAccounts, getRecentPrioritizationFees, getSignatureStatuses (searchTransactionHistory),
    getSignaturesForAddress, getSlot, getTokenAccountBalance, getTokenAccountsByOwner (mint / programId),
    getTokenSupply, getTransaction (json/jsonParsed/base64/base58, maxSupportedTransactionVersion),
    getTransactionCount, getVersion, isBlockhashValid, requestAirdrop, sendTransaction (base58/base64,
    skipPreflight, preflightCommitment, maxRetries accepted), simulateTransaction (sigVerify,
    replaceRecentBlockhash, accounts, innerInstructions). Unknown methods: -32601 "Method not found".
    Also ``GET /health`` -> ``ok``.

Test-only control methods (params as an object, or positionally)
    devnet_advanceSlots {count=1}         produce ``count`` blocks now; returns devnet_getState.
    devnet_expireBlockhashes {}           advance until every blockhash issued so far is past its
                                          lastValidBlockHeight even at ``finalized`` commitment
                                          (150 + 32 + 1 blocks); returns devnet_getState.
    devnet_setAutoTick {enabled, slotMs?} start/stop the slot ticker, optionally with a new period.
    devnet_dropNextSends {count=1}        the next ``count`` sendTransaction calls pass preflight and return
                                          the signature, but the transaction is never applied (a lost send).
    devnet_holdSends {}                   accept sends but queue them instead of applying them ...
    devnet_releaseSends {}                ... until released, applied in order against the then-current
                                          chain (expired ones are dropped); returns [{signature, landed}].
    devnet_setAccount {pubkey, lamports, data(base64)?, owner?, executable?}   write an account directly.
    devnet_getState {}                    slot, blockHeight, finalizedSlot, autoTick, slotMs, holdingSends,
                                          heldSends, dropNextSends, lostSends, droppedByLeader.

Known limits versus a real validator
    Account state is read from the tip for every commitment (only ``context.slot``, blockhashes, statuses and
    transaction visibility follow the commitment). No forks, no skipped slots after start, no vote
    transactions, no websocket subscriptions, no getBlock / getProgramAccounts. requestAirdrop sends a faucet
    transfer with the tip blockhash, so two identical airdrops in one slot share a signature and the second
    is a no-op (as on a real test validator); airdrops bypass devnet_dropNextSends / devnet_holdSends.
    jsonParsed transactions keep instructions partially decoded; Token-2022 extensions beyond the simple ones
    are reported as ``unparseableExtension``; interest-bearing / scaled UI amounts are not applied.
    Precompile signatures are not counted in fees. Durable-nonce transactions are accepted when the nonce
    account holds the transaction's blockhash.
"""

from .ledger import Ledger
from .rpc import SolanaRpc
from .server import SolanaDevnet, build_app, run_solana_devnet

__all__ = ["Ledger", "SolanaDevnet", "SolanaRpc", "build_app", "run_solana_devnet"]
