"""Building real TransactionResult / OperationResult XDR and Horizon's result-code strings."""

from __future__ import annotations

from stellar_sdk import xdr as x

TxCode = x.TransactionResultCode
OpType = x.OperationType

TX_CODE_NAMES: dict[TxCode, str] = {
    TxCode.txFEE_BUMP_INNER_SUCCESS: "tx_fee_bump_inner_success",
    TxCode.txSUCCESS: "tx_success",
    TxCode.txFAILED: "tx_failed",
    TxCode.txTOO_EARLY: "tx_too_early",
    TxCode.txTOO_LATE: "tx_too_late",
    TxCode.txMISSING_OPERATION: "tx_missing_operation",
    TxCode.txBAD_SEQ: "tx_bad_seq",
    TxCode.txBAD_AUTH: "tx_bad_auth",
    TxCode.txINSUFFICIENT_BALANCE: "tx_insufficient_balance",
    TxCode.txNO_ACCOUNT: "tx_no_source_account",
    TxCode.txINSUFFICIENT_FEE: "tx_insufficient_fee",
    TxCode.txBAD_AUTH_EXTRA: "tx_bad_auth_extra",
    TxCode.txINTERNAL_ERROR: "tx_internal_error",
    TxCode.txNOT_SUPPORTED: "tx_not_supported",
    TxCode.txFEE_BUMP_INNER_FAILED: "tx_fee_bump_inner_failed",
    TxCode.txBAD_SPONSORSHIP: "tx_bad_sponsorship",
    TxCode.txBAD_MIN_SEQ_AGE_OR_GAP: "tx_bad_min_seq_age_or_gap",
    TxCode.txMALFORMED: "tx_malformed",
    TxCode.txSOROBAN_INVALID: "tx_soroban_invalid",
}

_GENERIC_OP_NAMES = {
    x.OperationResultCode.opBAD_AUTH: "op_bad_auth",
    x.OperationResultCode.opNO_ACCOUNT: "op_no_source_account",
    x.OperationResultCode.opNOT_SUPPORTED: "op_not_supported",
    x.OperationResultCode.opTOO_MANY_SUBENTRIES: "op_too_many_subentries",
    x.OperationResultCode.opEXCEEDED_WORK_LIMIT: "op_exceeded_work_limit",
    x.OperationResultCode.opTOO_MANY_SPONSORING: "op_too_many_sponsoring",
}

# op type -> (OperationResultTr attribute, result class, {inner code: horizon name})
_C = x.CreateAccountResultCode
_P = x.PaymentResultCode
_CT = x.ChangeTrustResultCode
_AM = x.AccountMergeResultCode
_MD = x.ManageDataResultCode
_BS = x.BumpSequenceResultCode
_SO = x.SetOptionsResultCode
_STF = x.SetTrustLineFlagsResultCode
_AT = x.AllowTrustResultCode

_INNER: dict[OpType, tuple[str, type, dict]] = {
    OpType.CREATE_ACCOUNT: (
        "create_account_result",
        x.CreateAccountResult,
        {
            _C.CREATE_ACCOUNT_SUCCESS: "op_success",
            _C.CREATE_ACCOUNT_MALFORMED: "op_malformed",
            _C.CREATE_ACCOUNT_UNDERFUNDED: "op_underfunded",
            _C.CREATE_ACCOUNT_LOW_RESERVE: "op_low_reserve",
            _C.CREATE_ACCOUNT_ALREADY_EXIST: "op_already_exists",
        },
    ),
    OpType.PAYMENT: (
        "payment_result",
        x.PaymentResult,
        {
            _P.PAYMENT_SUCCESS: "op_success",
            _P.PAYMENT_MALFORMED: "op_malformed",
            _P.PAYMENT_UNDERFUNDED: "op_underfunded",
            _P.PAYMENT_SRC_NO_TRUST: "op_src_no_trust",
            _P.PAYMENT_SRC_NOT_AUTHORIZED: "op_src_not_authorized",
            _P.PAYMENT_NO_DESTINATION: "op_no_destination",
            _P.PAYMENT_NO_TRUST: "op_no_trust",
            _P.PAYMENT_NOT_AUTHORIZED: "op_not_authorized",
            _P.PAYMENT_LINE_FULL: "op_line_full",
            _P.PAYMENT_NO_ISSUER: "op_no_issuer",
        },
    ),
    OpType.CHANGE_TRUST: (
        "change_trust_result",
        x.ChangeTrustResult,
        {
            _CT.CHANGE_TRUST_SUCCESS: "op_success",
            _CT.CHANGE_TRUST_MALFORMED: "op_malformed",
            _CT.CHANGE_TRUST_NO_ISSUER: "op_no_issuer",
            _CT.CHANGE_TRUST_INVALID_LIMIT: "op_invalid_limit",
            _CT.CHANGE_TRUST_LOW_RESERVE: "op_low_reserve",
            _CT.CHANGE_TRUST_SELF_NOT_ALLOWED: "op_self_not_allowed",
            _CT.CHANGE_TRUST_TRUST_LINE_MISSING: "op_trust_line_missing",
            _CT.CHANGE_TRUST_CANNOT_DELETE: "op_cannot_delete",
            _CT.CHANGE_TRUST_NOT_AUTH_MAINTAIN_LIABILITIES: "op_not_auth_maintain_liabilities",
        },
    ),
    OpType.ACCOUNT_MERGE: (
        "account_merge_result",
        x.AccountMergeResult,
        {
            _AM.ACCOUNT_MERGE_SUCCESS: "op_success",
            _AM.ACCOUNT_MERGE_MALFORMED: "op_malformed",
            _AM.ACCOUNT_MERGE_NO_ACCOUNT: "op_no_account",
            _AM.ACCOUNT_MERGE_IMMUTABLE_SET: "op_immutable_set",
            _AM.ACCOUNT_MERGE_HAS_SUB_ENTRIES: "op_has_sub_entries",
            _AM.ACCOUNT_MERGE_SEQNUM_TOO_FAR: "op_seq_num_too_far",
            _AM.ACCOUNT_MERGE_DEST_FULL: "op_dest_full",
            _AM.ACCOUNT_MERGE_IS_SPONSOR: "op_is_sponsor",
        },
    ),
    OpType.MANAGE_DATA: (
        "manage_data_result",
        x.ManageDataResult,
        {
            _MD.MANAGE_DATA_SUCCESS: "op_success",
            _MD.MANAGE_DATA_NOT_SUPPORTED_YET: "op_not_supported_yet",
            _MD.MANAGE_DATA_NAME_NOT_FOUND: "op_data_name_not_found",
            _MD.MANAGE_DATA_LOW_RESERVE: "op_low_reserve",
            _MD.MANAGE_DATA_INVALID_NAME: "op_data_invalid_name",
        },
    ),
    OpType.BUMP_SEQUENCE: (
        "bump_seq_result",
        x.BumpSequenceResult,
        {_BS.BUMP_SEQUENCE_SUCCESS: "op_success", _BS.BUMP_SEQUENCE_BAD_SEQ: "op_bad_seq"},
    ),
    OpType.SET_OPTIONS: (
        "set_options_result",
        x.SetOptionsResult,
        {
            _SO.SET_OPTIONS_SUCCESS: "op_success",
            _SO.SET_OPTIONS_LOW_RESERVE: "op_low_reserve",
            _SO.SET_OPTIONS_TOO_MANY_SIGNERS: "op_too_many_signers",
            _SO.SET_OPTIONS_BAD_FLAGS: "op_bad_flags",
            _SO.SET_OPTIONS_INVALID_INFLATION: "op_invalid_inflation",
            _SO.SET_OPTIONS_CANT_CHANGE: "op_cant_change",
            _SO.SET_OPTIONS_UNKNOWN_FLAG: "op_unknown_flag",
            _SO.SET_OPTIONS_THRESHOLD_OUT_OF_RANGE: "op_threshold_out_of_range",
            _SO.SET_OPTIONS_BAD_SIGNER: "op_bad_signer",
            _SO.SET_OPTIONS_INVALID_HOME_DOMAIN: "op_invalid_home_domain",
            _SO.SET_OPTIONS_AUTH_REVOCABLE_REQUIRED: "op_auth_revocable_required",
        },
    ),
    OpType.SET_TRUST_LINE_FLAGS: (
        "set_trust_line_flags_result",
        x.SetTrustLineFlagsResult,
        {
            _STF.SET_TRUST_LINE_FLAGS_SUCCESS: "op_success",
            _STF.SET_TRUST_LINE_FLAGS_MALFORMED: "op_malformed",
            _STF.SET_TRUST_LINE_FLAGS_NO_TRUST_LINE: "op_no_trustline",
            _STF.SET_TRUST_LINE_FLAGS_CANT_REVOKE: "op_cant_revoke",
            _STF.SET_TRUST_LINE_FLAGS_INVALID_STATE: "op_invalid_state",
            _STF.SET_TRUST_LINE_FLAGS_LOW_RESERVE: "op_low_reserve",
        },
    ),
    OpType.ALLOW_TRUST: (
        "allow_trust_result",
        x.AllowTrustResult,
        {
            _AT.ALLOW_TRUST_SUCCESS: "op_success",
            _AT.ALLOW_TRUST_MALFORMED: "op_malformed",
            _AT.ALLOW_TRUST_NO_TRUST_LINE: "op_no_trustline",
            _AT.ALLOW_TRUST_TRUST_NOT_REQUIRED: "op_not_required",
            _AT.ALLOW_TRUST_CANT_REVOKE: "op_cant_revoke",
            _AT.ALLOW_TRUST_SELF_NOT_ALLOWED: "op_self_not_allowed",
            _AT.ALLOW_TRUST_LOW_RESERVE: "op_low_reserve",
        },
    ),
}

SUPPORTED_OPS = frozenset(_INNER)


def op_inner(op_type: OpType, code, **extra) -> x.OperationResult:
    """An opINNER result carrying the op-specific code (e.g. PAYMENT_NO_TRUST)."""
    attr, cls, _names = _INNER[op_type]
    tr = x.OperationResultTr(op_type, **{attr: cls(code, **extra)})
    return x.OperationResult(x.OperationResultCode.opINNER, tr=tr)


def op_generic(code: x.OperationResultCode) -> x.OperationResult:
    return x.OperationResult(code)


def op_succeeded(result: x.OperationResult) -> bool:
    if result.code != x.OperationResultCode.opINNER:
        return False
    attr, _cls, _names = _INNER[result.tr.type]
    return getattr(result.tr, attr).code.value == 0


def op_code_name(result: x.OperationResult) -> str:
    if result.code != x.OperationResultCode.opINNER:
        return _GENERIC_OP_NAMES.get(result.code, "op_inner")
    attr, _cls, names = _INNER[result.tr.type]
    return names[getattr(result.tr, attr).code]


def tx_result(
    code: TxCode,
    fee_charged: int = 0,
    op_results: list[x.OperationResult] | None = None,
    inner: tuple[bytes, x.InnerTransactionResult] | None = None,
) -> x.TransactionResult:
    if code in (TxCode.txSUCCESS, TxCode.txFAILED):
        body = x.TransactionResultResult(code, results=list(op_results or []))
    elif code in (TxCode.txFEE_BUMP_INNER_SUCCESS, TxCode.txFEE_BUMP_INNER_FAILED):
        assert inner is not None
        body = x.TransactionResultResult(code, inner_result_pair=x.InnerTransactionResultPair(x.Hash(inner[0]), inner[1]))
    else:
        body = x.TransactionResultResult(code)
    return x.TransactionResult(x.Int64(fee_charged), body, x.TransactionResultExt(0))


def inner_tx_result(code: TxCode, op_results: list[x.OperationResult] | None = None, fee_charged: int = 0) -> x.InnerTransactionResult:
    if code in (TxCode.txSUCCESS, TxCode.txFAILED):
        body = x.InnerTransactionResultResult(code, results=list(op_results or []))
    else:
        body = x.InnerTransactionResultResult(code)
    return x.InnerTransactionResult(x.Int64(fee_charged), body, x.InnerTransactionResultExt(0))


def result_codes(result: x.TransactionResult) -> dict:
    """Horizon's ``extras.result_codes`` for a TransactionResult."""
    code = result.result.code
    out: dict = {"transaction": TX_CODE_NAMES[code]}
    ops = None
    if code in (TxCode.txFEE_BUMP_INNER_SUCCESS, TxCode.txFEE_BUMP_INNER_FAILED):
        inner = result.result.inner_result_pair.result.result
        out["inner_transaction"] = TX_CODE_NAMES[inner.code]
        ops = inner.results
    elif code in (TxCode.txSUCCESS, TxCode.txFAILED):
        ops = result.result.results
    if ops:
        out["operations"] = [op_code_name(r) for r in ops]
    return out


def is_success(result: x.TransactionResult) -> bool:
    return result.result.code in (TxCode.txSUCCESS, TxCode.txFEE_BUMP_INNER_SUCCESS)
