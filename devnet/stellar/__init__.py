"""A Horizon-compatible Stellar devnet (no stellar-core needed).

It parses real transaction envelopes with stellar-sdk's XDR classes, checks ed25519 signatures
against the network passphrase (hash = sha256(networkId || ENVELOPE_TYPE_TX || tx), hint = last
4 bytes of the key; fee bumps use ENVELOPE_TYPE_TX_FEE_BUMP), applies them to its own ledger
and answers like Horizon, so stellar-sdk's ``ServerAsync`` (``AiohttpClient``) works unchanged.

Usage::

    from devnet.stellar import run_stellar_devnet

    async with run_stellar_devnet(host="127.0.0.1", port=0, close_interval_ms=1000) as devnet:
        server = ServerAsync(devnet.url, client=AiohttpClient())
        devnet.network_passphrase     # "Custody Devnet ; 2026" unless configured
        devnet.friendbot_url          # GET ?addr=G... funds 10,000 XLM

    python -m devnet.stellar --host 127.0.0.1 --port 8000 [--close-interval-ms 1000] \
        [--state-dir .data/stellar]

State: in memory unless a state directory is given (``--state-dir``, ``state_dir=``): then every
ledger close is saved to a SQLite file there (:mod:`devnet.stellar.persistence`) before the
ledger is visible, and a restart continues the network: accounts, sequence numbers, trustlines,
data entries, closed ledgers (numbers only go forward), transaction history and results, the
fee pool, clock offset and base fee. Only the open ledger's transactions can be lost (SIGKILL).

Ledger rules (stellar-core semantics):
  * tx seq must be account seq + 1 (or satisfy PreconditionsV2 minSeqNum); new accounts start at
    ``ledger_seq << 32``; fee >= base fee (100 stroops) x ops (x (ops+1) for fee bumps); fee
    charged = base fee x ops; timebounds and ledgerbounds against the devnet clock / open ledger;
    minSeqAge / minSeqLedgerGap; multisig thresholds (low/med/high), ed25519 / pre-auth-tx /
    hash-x signers, extra signers (ed25519, hash-x); unused signatures -> tx_bad_auth_extra.
  * Base reserve 0.5 XLM; min balance = (2 + subentries) x reserve.
  * Operations: create_account, payment (native and CODE:ISSUER; the issuer pays / receives
    its own asset without a trustline; M... destinations credit the G account), change_trust,
    account_merge, manage_data, bump_sequence, set_options, set_trust_line_flags, allow_trust
    (auth_required issuers -> op_not_authorized). Others -> tx_failed / op_not_supported.
  * Rejected transactions (tx_bad_seq, tx_bad_auth, tx_too_late, tx_too_early,
    tx_insufficient_fee, tx_insufficient_balance, tx_no_source_account, and tx_failed from an
    operation *validity* check such as op_malformed / op_bad_auth) change nothing.
    A transaction whose operation fails when applied (op_no_trust, op_underfunded,
    op_low_reserve, ...) is applied: it pays its fee, consumes its sequence number, is recorded
    with successful=false, and all of its operations are rolled back.
  * A valid submission is applied at once into the open ledger and becomes visible when that
    ledger closes. ``POST /transactions`` returns only after the close (like Horizon's
    synchronous submit). With ``close_interval_ms=0`` ledgers close on demand and a synchronous
    submission closes its ledger immediately.
  * Resubmitting a known envelope (same hash; for a plain tx also the inner hash of an applied
    fee bump) returns the recorded result and applies nothing.
  * One transaction per account in the open ledger (stellar-core's queue limit): while the open
    ledger holds a transaction whose tx source or fee source (G account behind a muxed source)
    is also the tx source or fee source of a new submission, the new one is refused with core's
    TRY_AGAIN_LATER and changes nothing, even with the right next sequence number; after the
    close the identical envelope is accepted. Synchronous submit then waits like Horizon
    (up to ``submission_timeout``, for the hash to land through some other submission) and
    answers 504 timeout (at once with ``close_interval_ms=0``); async submit answers 503
    {"tx_status": "TRY_AGAIN_LATER", "hash": ...}. Use distinct tx source ("channel") accounts,
    with operation sources for the paying account, to get several payments into one ledger.
    Friendbot is exempt (a real one uses its own channel accounts).

Horizon endpoints (JSON shaped like Horizon's, HAL ``_links`` / ``_embedded.records``;
errors are ``application/problem+json`` with Horizon's ``type`` URLs):
  GET  /                                   root (network_passphrase, history_latest_ledger, ...)
  GET  /accounts/{id}                      404 not_found if missing; sequence is a string;
                                           balances (credit first, native last), signers,
                                           thresholds, flags, data (base64 values)
  GET  /accounts/{id}/data/{key}           {"value": base64}
  GET  /accounts/{id}/transactions|operations|payments     cursor, limit (<=200), order,
                                           include_failed (default false)
  POST /transactions                       form field ``tx``; 200 transaction resource, or 400
                                           transaction_failed with extras.result_xdr (real
                                           TransactionResult XDR) and extras.result_codes,
                                           400 transaction_malformed, 504 timeout (also after
                                           TRY_AGAIN_LATER)
  POST /transactions_async                 201 PENDING / 409 DUPLICATE / 400 ERROR with
                                           error_result_xdr / 503 TRY_AGAIN_LATER (does not
                                           close a ledger)
  GET  /transactions[/{hash}[/operations|/payments]]   by hash or fee-bump inner hash
  GET  /operations, /payments, /ledgers[/{seq}[/transactions|/payments]]
  GET  /fee_stats                          last_ledger_base_fee, fee_charged / max_fee percentiles
  GET|POST /friendbot?addr=G...            creates the account with 10,000 XLM from the root
                                           account (a real create_account tx); an existing
                                           account -> 400 bad_request

Test controls (JSON body or query parameters):
  GET  /_devnet/status                         ledger numbers, clock, base fee, pending txs,
                                               "rejections": refused submissions by code
                                               ({"TRY_AGAIN_LATER": n, "tx_bad_seq": n, ...})
  POST /_devnet/close_ledgers {"count": 1}     close ledgers now
  POST /_devnet/set_time {"unix": T}           set the devnet clock (not before the last close)
  POST /_devnet/advance_time {"seconds": S}    move the devnet clock forward
  POST /_devnet/fail_next_submissions {"count": 1, "status": 504, "apply": true}
       the next ``count`` submissions (POST /transactions or /transactions_async) are processed
       normally (the tx is applied and its ledger closed) and then answered with a Horizon 5xx
       problem (504 timeout by default): a lost response. ``apply: false`` drops the request
       before it reaches the ledger instead.
  POST /_devnet/set_base_fee {"stroops": N}    min fee per operation from now on

Known limits vs Horizon / stellar-core: no offers, path payments, claimable balances,
sponsorship, liquidity pools, clawback or Soroban; no surge pricing (a tx with enough fee always
gets into the next ledger; the queue limit is one tx per account, with no fee-based
replacement); no effects,
trades or streaming (SSE); ledger close times are whole seconds and may repeat with sub-second
close intervals; history lives in memory unless a state directory is given.
"""

from .app import DevnetNode, create_app
from .launcher import StellarDevnet, run_stellar_devnet, running_stellar_devnet
from .ledger import (
    DEFAULT_BASE_FEE,
    DEFAULT_BASE_RESERVE,
    DEFAULT_NETWORK_PASSPHRASE,
    StellarLedger,
    SubmitOutcome,
    TxRecord,
)

__all__ = [
    "DEFAULT_BASE_FEE",
    "DEFAULT_BASE_RESERVE",
    "DEFAULT_NETWORK_PASSPHRASE",
    "DevnetNode",
    "StellarDevnet",
    "StellarLedger",
    "SubmitOutcome",
    "TxRecord",
    "create_app",
    "run_stellar_devnet",
    "running_stellar_devnet",
]
