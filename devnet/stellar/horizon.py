"""Horizon-shaped JSON for the devnet's records: accounts, transactions, operations, ledgers,
collections (HAL with ``_links`` / ``_embedded.records``), and problem+json errors."""

from __future__ import annotations

from urllib.parse import urlencode

from stellar_sdk import xdr as x

from .codec import (
    account_id_to_str,
    amount_str,
    asset_fields,
    asset_from_xdr,
    b64,
    iso_time,
    memo_fields,
    muxed_from_xdr,
    signer_key_to_str,
    toid,
)
from .ledger import LedgerRecord, StellarLedger, TxRecord
from .results import result_codes
from .state import (
    AUTH_CLAWBACK_ENABLED,
    AUTH_IMMUTABLE,
    AUTH_REQUIRED,
    AUTH_REVOCABLE,
    TL_AUTHORIZED,
    TL_AUTHORIZED_TO_MAINTAIN_LIABILITIES,
    TL_CLAWBACK_ENABLED,
    Account,
)

HORIZON_VERSION = "devnet-stellar-0.1.0"
CORE_VERSION = "devnet-stellar (python, no stellar-core)"
ERR = "https://stellar.org/horizon-errors/"
OpT = x.OperationType


def link(href: str, templated: bool = False) -> dict:
    return {"href": href, "templated": True} if templated else {"href": href}


# ------------------------------------------------------------------ problems


def problem(kind: str, title: str, status: int, detail: str, extras: dict | None = None) -> dict:
    body = {"type": ERR + kind, "title": title, "status": status, "detail": detail}
    if extras is not None:
        body["extras"] = extras
    return body


def not_found() -> dict:
    return problem(
        "not_found",
        "Resource Missing",
        404,
        "The resource at the url requested was not found.  This usually occurs for one of two "
        "reasons:  The url requested is not valid, or no data in our database could be found "
        "with the parameters provided.",
    )


def bad_request(field: str, reason: str) -> dict:
    return problem(
        "bad_request",
        "Bad Request",
        400,
        "The request you sent was invalid in some way.",
        {"invalid_field": field, "reason": reason},
    )


def transaction_failed(envelope_xdr: str, result: x.TransactionResult) -> dict:
    return problem(
        "transaction_failed",
        "Transaction Failed",
        400,
        "The transaction failed when submitted to the stellar network. The `extras.result_codes` "
        "field on this response contains further details.  Descriptions of each code can be "
        "found at: https://developers.stellar.org/docs/data/apis/horizon/api-reference/errors/"
        "http-status-codes/horizon-specific/transaction-failed",
        {
            "envelope_xdr": envelope_xdr,
            "result_xdr": result.to_xdr(),
            "result_codes": result_codes(result),
        },
    )


def transaction_malformed(envelope_xdr: str) -> dict:
    return problem(
        "transaction_malformed",
        "Transaction Malformed",
        400,
        "Horizon could not decode the transaction envelope in this request. A transaction "
        "should be an XDR TransactionEnvelope struct encoded using base64.  The envelope read "
        "from this request is echoed in the `extras.envelope_xdr` field of this response for "
        "your convenience.",
        {"envelope_xdr": envelope_xdr},
    )


def timeout() -> dict:
    return problem(
        "timeout",
        "Timeout",
        504,
        "Your request timed out before completing. Please try your request again. If you are "
        "submitting a transaction make sure you are sending exactly the same transaction (with "
        "the same sequence number).",
    )


def server_problem(status: int) -> dict:
    if status == 504:
        return timeout()
    if status == 503:
        return problem(
            "service_unavailable",
            "Service Unavailable",
            503,
            "The request cannot be fulfilled at this time. Please try again later.",
        )
    return problem(
        "server_error",
        "Internal Server Error",
        status,
        "An error occurred while processing this request.  This is usually due to a bug within "
        "the server software.  Trying this request again may succeed if the bug is transient.",
    )


# ------------------------------------------------------------------ accounts


def account_json(ledger: StellarLedger, acc: Account, base: str) -> dict:
    trustlines, data = ledger.account_entries(acc.account_id)
    a = acc.account_id
    balances = []
    for tl in trustlines:
        balances.append(
            {
                "balance": amount_str(tl.balance),
                "limit": amount_str(tl.limit),
                "buying_liabilities": "0.0000000",
                "selling_liabilities": "0.0000000",
                "last_modified_ledger": tl.last_modified,
                "is_authorized": bool(tl.flags & TL_AUTHORIZED),
                "is_authorized_to_maintain_liabilities": bool(tl.flags & (TL_AUTHORIZED | TL_AUTHORIZED_TO_MAINTAIN_LIABILITIES)),
                "is_clawback_enabled": bool(tl.flags & TL_CLAWBACK_ENABLED),
                **asset_fields(tl.asset),
            }
        )
    balances.append(
        {
            "balance": amount_str(acc.balance),
            "buying_liabilities": "0.0000000",
            "selling_liabilities": "0.0000000",
            "asset_type": "native",
        }
    )
    signers = [{"weight": s.weight, "key": s.key, "type": _signer_type(s.key)} for s in acc.signers]
    signers.append({"weight": acc.master_weight, "key": a, "type": "ed25519_public_key"})
    modified = ledger.ledger(acc.last_modified)
    out = {
        "_links": {
            "self": link(f"{base}/accounts/{a}"),
            "transactions": link(f"{base}/accounts/{a}/transactions{{?cursor,limit,order}}", True),
            "operations": link(f"{base}/accounts/{a}/operations{{?cursor,limit,order}}", True),
            "payments": link(f"{base}/accounts/{a}/payments{{?cursor,limit,order}}", True),
            "effects": link(f"{base}/accounts/{a}/effects{{?cursor,limit,order}}", True),
            "offers": link(f"{base}/accounts/{a}/offers{{?cursor,limit,order}}", True),
            "trades": link(f"{base}/accounts/{a}/trades{{?cursor,limit,order}}", True),
            "data": link(f"{base}/accounts/{a}/data/{{key}}", True),
        },
        "id": a,
        "account_id": a,
        "sequence": str(acc.seq_num),
        "sequence_ledger": acc.seq_ledger,
        "sequence_time": str(acc.seq_time),
        "subentry_count": acc.num_sub_entries,
        "last_modified_ledger": acc.last_modified,
        "last_modified_time": iso_time(modified.close_time) if modified else None,
        "thresholds": {
            "low_threshold": acc.low_threshold,
            "med_threshold": acc.med_threshold,
            "high_threshold": acc.high_threshold,
        },
        "flags": {
            "auth_required": bool(acc.flags & AUTH_REQUIRED),
            "auth_revocable": bool(acc.flags & AUTH_REVOCABLE),
            "auth_immutable": bool(acc.flags & AUTH_IMMUTABLE),
            "auth_clawback_enabled": bool(acc.flags & AUTH_CLAWBACK_ENABLED),
        },
        "balances": balances,
        "signers": signers,
        "data": {d.name: b64(d.value) for d in data},
        "num_sponsoring": 0,
        "num_sponsored": 0,
        "paging_token": a,
    }
    if acc.home_domain:
        out["home_domain"] = acc.home_domain
    if acc.inflation_dest:
        out["inflation_destination"] = acc.inflation_dest
    return out


def _signer_type(key: str) -> str:
    return {"G": "ed25519_public_key", "T": "preauth_tx", "X": "sha256_hash"}.get(key[0], "ed25519_signed_payload")


# ------------------------------------------------------------------ transactions


def _preconditions_json(tx: x.Transaction) -> tuple[dict, dict]:
    c = tx.cond
    pre: dict = {}
    times: dict = {}
    tb = None
    if c.type == x.PreconditionType.PRECOND_TIME:
        tb = c.time_bounds
    elif c.type == x.PreconditionType.PRECOND_V2:
        v2 = c.v2
        tb = v2.time_bounds
        if v2.ledger_bounds is not None:
            pre["ledgerbounds"] = {
                "min_ledger": v2.ledger_bounds.min_ledger.uint32,
                "max_ledger": v2.ledger_bounds.max_ledger.uint32,
            }
        if v2.min_seq_num is not None:
            pre["min_account_sequence"] = str(v2.min_seq_num.sequence_number.int64)
        if v2.min_seq_age.duration.uint64:
            pre["min_account_sequence_age"] = str(v2.min_seq_age.duration.uint64)
        if v2.min_seq_ledger_gap.uint32:
            pre["min_account_sequence_ledger_gap"] = v2.min_seq_ledger_gap.uint32
        if v2.extra_signers:
            pre["extra_signers"] = [signer_key_to_str(s)[0] for s in v2.extra_signers]
    if tb is not None:
        lo, hi = tb.min_time.time_point.uint64, tb.max_time.time_point.uint64
        pre["timebounds"] = {"min_time": str(lo)}
        times["valid_after"] = iso_time(lo)
        if hi:
            pre["timebounds"]["max_time"] = str(hi)
            times["valid_before"] = iso_time(min(hi, 253402300799))
    return pre, times


def _sigs(sigs: list[x.DecoratedSignature]) -> list[str]:
    return [b64(s.signature.signature) for s in sigs]


def transaction_json(rec: TxRecord, base: str, requested_hash: str | None = None) -> dict:
    p = rec.parsed
    tx = p.tx
    src = p.tx_source
    fee_src = p.fee_source
    h = p.hash_hex
    signatures = _sigs(p.fee_bump_signatures if p.fee_bump else p.signatures)
    if p.fee_bump is not None and requested_hash and requested_hash.lower() == p.tx_hash.hex():
        h = p.tx_hash.hex()
        signatures = _sigs(p.signatures)
    pt = str(rec.paging_token)
    pre, times = _preconditions_json(tx)
    out = {
        "_links": {
            "self": link(f"{base}/transactions/{h}"),
            "account": link(f"{base}/accounts/{src.account_id}"),
            "ledger": link(f"{base}/ledgers/{rec.ledger}"),
            "operations": link(f"{base}/transactions/{h}/operations{{?cursor,limit,order}}", True),
            "effects": link(f"{base}/transactions/{h}/effects{{?cursor,limit,order}}", True),
            "precedes": link(f"{base}/transactions?order=asc&cursor={pt}"),
            "succeeds": link(f"{base}/transactions?order=desc&cursor={pt}"),
            "transaction": link(f"{base}/transactions/{h}"),
        },
        "id": h,
        "paging_token": pt,
        "successful": rec.successful,
        "hash": h,
        "ledger": rec.ledger,
        "created_at": iso_time(rec.closed_at or 0),
        "source_account": src.account_id,
        "source_account_sequence": str(tx.seq_num.sequence_number.int64),
        "fee_account": fee_src.account_id,
        "fee_charged": str(rec.fee_charged),
        "max_fee": str(p.fee_bump.fee.int64 if p.fee_bump else tx.fee.uint32),
        "operation_count": len(tx.operations),
        "envelope_xdr": p.envelope_xdr,
        "result_xdr": rec.result_xdr,
        "result_meta_xdr": rec.meta_xdr,
        "fee_meta_xdr": rec.fee_meta_xdr,
        **memo_fields(tx.memo),
        "signatures": signatures,
        **times,
    }
    if src.muxed_address:
        out["account_muxed"] = src.muxed_address
        out["account_muxed_id"] = str(src.muxed_id)
    if p.fee_bump is not None and fee_src.muxed_address:
        out["fee_account_muxed"] = fee_src.muxed_address
        out["fee_account_muxed_id"] = str(fee_src.muxed_id)
    if pre:
        out["preconditions"] = pre
    if p.fee_bump is not None:
        out["fee_bump_transaction"] = {
            "hash": p.hash_hex,
            "signatures": _sigs(p.fee_bump_signatures),
        }
        out["inner_transaction"] = {
            "hash": p.tx_hash.hex(),
            "signatures": _sigs(p.signatures),
            "max_fee": str(tx.fee.uint32),
        }
    return out


# ------------------------------------------------------------------ operations

_TYPE_NAMES = {
    OpT.CREATE_ACCOUNT: "create_account",
    OpT.PAYMENT: "payment",
    OpT.PATH_PAYMENT_STRICT_RECEIVE: "path_payment_strict_receive",
    OpT.MANAGE_SELL_OFFER: "manage_sell_offer",
    OpT.CREATE_PASSIVE_SELL_OFFER: "create_passive_sell_offer",
    OpT.SET_OPTIONS: "set_options",
    OpT.CHANGE_TRUST: "change_trust",
    OpT.ALLOW_TRUST: "allow_trust",
    OpT.ACCOUNT_MERGE: "account_merge",
    OpT.INFLATION: "inflation",
    OpT.MANAGE_DATA: "manage_data",
    OpT.BUMP_SEQUENCE: "bump_sequence",
    OpT.MANAGE_BUY_OFFER: "manage_buy_offer",
    OpT.PATH_PAYMENT_STRICT_SEND: "path_payment_strict_send",
    OpT.SET_TRUST_LINE_FLAGS: "set_trust_line_flags",
}


def operation_json(rec: TxRecord, index: int, base: str) -> dict:
    tx = rec.parsed.tx
    op = tx.operations[index]
    src = muxed_from_xdr(op.source_account) if op.source_account else rec.parsed.tx_source
    op_id = str(toid(rec.ledger, rec.order, index + 1))
    t = op.body.type
    h = rec.parsed.hash_hex
    out: dict = {
        "_links": {
            "self": link(f"{base}/operations/{op_id}"),
            "transaction": link(f"{base}/transactions/{h}"),
            "effects": link(f"{base}/operations/{op_id}/effects"),
            "succeeds": link(f"{base}/effects?order=desc&cursor={op_id}"),
            "precedes": link(f"{base}/effects?order=asc&cursor={op_id}"),
        },
        "id": op_id,
        "paging_token": op_id,
        "transaction_successful": rec.successful,
        "source_account": src.account_id,
        "type": _TYPE_NAMES.get(t, t.name.lower()),
        "type_i": t.value,
        "created_at": iso_time(rec.closed_at or 0),
        "transaction_hash": h,
    }
    if src.muxed_address:
        out["source_account_muxed"] = src.muxed_address
        out["source_account_muxed_id"] = str(src.muxed_id)
    b = op.body
    if t == OpT.CREATE_ACCOUNT:
        o = b.create_account_op
        out.update(
            starting_balance=amount_str(o.starting_balance.int64),
            funder=src.account_id,
            account=account_id_to_str(o.destination),
        )
    elif t == OpT.PAYMENT:
        o = b.payment_op
        dest = muxed_from_xdr(o.destination)
        out.update(asset_fields(asset_from_xdr(o.asset)))
        out.update({"from": src.account_id, "to": dest.account_id, "amount": amount_str(o.amount.int64)})
        if src.muxed_address:
            out["from_muxed"] = src.muxed_address
            out["from_muxed_id"] = str(src.muxed_id)
        if dest.muxed_address:
            out["to_muxed"] = dest.muxed_address
            out["to_muxed_id"] = str(dest.muxed_id)
    elif t == OpT.CHANGE_TRUST:
        o = b.change_trust_op
        asset = asset_from_xdr(o.line)
        out.update(asset_fields(asset))
        out.update(limit=amount_str(o.limit.int64), trustor=src.account_id)
        if asset is not None:
            out["trustee"] = asset.issuer
    elif t == OpT.ACCOUNT_MERGE:
        dest = muxed_from_xdr(b.destination)
        out.update(account=src.account_id, into=dest.account_id)
        if dest.muxed_address:
            out["into_muxed"] = dest.muxed_address
            out["into_muxed_id"] = str(dest.muxed_id)
    elif t == OpT.MANAGE_DATA:
        o = b.manage_data_op
        out.update(
            name=o.data_name.string64.decode("utf-8", errors="replace"),
            value=b64(o.data_value.data_value) if o.data_value is not None else "",
        )
    elif t == OpT.BUMP_SEQUENCE:
        out["bump_to"] = str(b.bump_sequence_op.bump_to.sequence_number.int64)
    elif t == OpT.SET_OPTIONS:
        o = b.set_options_op
        for name in ("master_weight", "low_threshold", "med_threshold", "high_threshold"):
            v = getattr(o, name)
            if v is not None:
                out["master_key_weight" if name == "master_weight" else name] = v.uint32
        if o.home_domain is not None:
            out["home_domain"] = o.home_domain.string32.decode("utf-8", errors="replace")
        if o.signer is not None:
            out["signer_key"] = signer_key_to_str(o.signer.key)[0]
            out["signer_weight"] = o.signer.weight.uint32
        if o.set_flags is not None:
            out["set_flags"] = [f for f in (1, 2, 4, 8) if o.set_flags.uint32 & f]
        if o.clear_flags is not None:
            out["clear_flags"] = [f for f in (1, 2, 4, 8) if o.clear_flags.uint32 & f]
    elif t == OpT.SET_TRUST_LINE_FLAGS:
        o = b.set_trust_line_flags_op
        out.update(asset_fields(asset_from_xdr(o.asset)))
        out["trustor"] = account_id_to_str(o.trustor)
        out["set_flags"] = [f for f in (1, 2, 4) if o.set_flags.uint32 & f]
        out["clear_flags"] = [f for f in (1, 2, 4) if o.clear_flags.uint32 & f]
    elif t == OpT.ALLOW_TRUST:
        o = b.allow_trust_op
        out["trustor"] = account_id_to_str(o.trustor)
        out["trustee"] = src.account_id
        out["authorize"] = o.authorize.uint32 == TL_AUTHORIZED
    return out


# ------------------------------------------------------------------ ledgers & root


def ledger_json(rec: LedgerRecord, base: str) -> dict:
    seq = rec.seq
    return {
        "_links": {
            "self": link(f"{base}/ledgers/{seq}"),
            "transactions": link(f"{base}/ledgers/{seq}/transactions{{?cursor,limit,order}}", True),
            "operations": link(f"{base}/ledgers/{seq}/operations{{?cursor,limit,order}}", True),
            "payments": link(f"{base}/ledgers/{seq}/payments{{?cursor,limit,order}}", True),
            "effects": link(f"{base}/ledgers/{seq}/effects{{?cursor,limit,order}}", True),
        },
        "id": rec.hash.hex(),
        "paging_token": str(toid(seq)),
        "hash": rec.hash.hex(),
        "prev_hash": rec.prev_hash.hex(),
        "sequence": seq,
        "successful_transaction_count": rec.successful_count,
        "failed_transaction_count": rec.failed_count,
        "operation_count": rec.operation_count,
        "tx_set_operation_count": rec.tx_set_operation_count,
        "closed_at": iso_time(rec.close_time),
        "total_coins": amount_str(rec.total_coins),
        "fee_pool": amount_str(rec.fee_pool),
        "base_fee_in_stroops": rec.base_fee,
        "base_reserve_in_stroops": rec.base_reserve,
        "max_tx_set_size": rec.max_tx_set_size,
        "protocol_version": rec.protocol_version,
        "header_xdr": rec.header_xdr,
    }


def root_json(ledger: StellarLedger, base: str) -> dict:
    latest = ledger.latest_ledger()
    return {
        "_links": {
            "account": link(f"{base}/accounts/{{account_id}}", True),
            "accounts": link(f"{base}/accounts{{?signer,sponsor,asset,liquidity_pool,cursor,limit,order}}", True),
            "account_transactions": link(f"{base}/accounts/{{account_id}}/transactions{{?cursor,limit,order}}", True),
            "fee_stats": link(f"{base}/fee_stats"),
            "friendbot": link(f"{base}/friendbot{{?addr}}", True),
            "ledger": link(f"{base}/ledgers/{{sequence}}", True),
            "ledgers": link(f"{base}/ledgers{{?cursor,limit,order}}", True),
            "operation": link(f"{base}/operations/{{id}}", True),
            "operations": link(f"{base}/operations{{?cursor,limit,order,include_failed}}", True),
            "payments": link(f"{base}/payments{{?cursor,limit,order,include_failed}}", True),
            "self": link(f"{base}/"),
            "transaction": link(f"{base}/transactions/{{hash}}", True),
            "transactions": link(f"{base}/transactions{{?cursor,limit,order}}", True),
        },
        "horizon_version": HORIZON_VERSION,
        "core_version": CORE_VERSION,
        "ingest_latest_ledger": latest.seq,
        "history_latest_ledger": latest.seq,
        "history_latest_ledger_closed_at": iso_time(latest.close_time),
        "history_elder_ledger": 1,
        "core_latest_ledger": latest.seq,
        "network_passphrase": ledger.network_passphrase,
        "current_protocol_version": latest.protocol_version,
        "supported_protocol_version": latest.protocol_version,
        "core_supported_protocol_version": latest.protocol_version,
    }


def fee_stats_json(ledger: StellarLedger, window: int = 5) -> dict:
    ledgers = ledger.ledgers()[-window:]
    latest = ledgers[-1]
    charged: list[int] = []
    bids: list[int] = []
    for lr in ledgers:
        for t in lr.txs:
            ops = len(t.parsed.tx.operations) + (1 if t.parsed.fee_bump else 0)
            charged.append(t.fee_charged // ops)
            max_fee = t.parsed.fee_bump.fee.int64 if t.parsed.fee_bump else t.parsed.tx.fee.uint32
            bids.append(max_fee // ops)
    base = latest.base_fee

    def dist(values: list[int]) -> dict:
        values = sorted(values) or [base]
        counts: dict[int, int] = {}
        for v in values:
            counts[v] = counts.get(v, 0) + 1
        mode = max(sorted(counts), key=lambda v: counts[v])

        def pct(p: int) -> str:
            idx = max(0, min(len(values) - 1, -(-len(values) * p // 100) - 1))
            return str(values[idx])

        out = {"max": str(values[-1]), "min": str(values[0]), "mode": str(mode)}
        for p in (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99):
            out[f"p{p}"] = pct(p)
        return out

    usage = latest.tx_set_operation_count / latest.max_tx_set_size if latest.max_tx_set_size else 0
    return {
        "last_ledger": str(latest.seq),
        "last_ledger_base_fee": str(base),
        "ledger_capacity_usage": f"{usage:.2f}",
        "fee_charged": dist(charged),
        "max_fee": dist(bids),
    }


# ------------------------------------------------------------------ collections


def page(
    base: str,
    path: str,
    records: list[dict],
    *,
    cursor: str | None,
    limit: int,
    order: str,
    extra_params: dict | None = None,
) -> dict:
    """A HAL collection page; ``records`` must already be filtered by cursor and ordered."""
    params = dict(extra_params or {})

    def href(c: str | None, o: str) -> str:
        q = {**params, "cursor": c or "", "limit": limit, "order": o}
        return f"{base}{path}?{urlencode(q)}"

    first = records[0]["paging_token"] if records else cursor
    last = records[-1]["paging_token"] if records else cursor
    reverse = "desc" if order == "asc" else "asc"
    return {
        "_links": {
            "self": link(href(cursor, order)),
            "next": link(href(last, order)),
            "prev": link(href(first, reverse)),
        },
        "_embedded": {"records": records},
    }
