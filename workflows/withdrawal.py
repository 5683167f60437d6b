"""WithdrawalWorkflow (id ``withdrawal-<withdrawal_id>``).

PENDING -> VALIDATING [-> AWAITING_APPROVAL] -> SIGNING -> BROADCASTING -> CONFIRMING
        -> COMPLETED | FAILED | CANCELLED

Every side effect is an idempotent activity; this class only decides the order. Permanent
errors arrive as non-retryable ApplicationErrors whose type is the stable error code.

Operator controls (CLI, API, or `temporal workflow signal/update`):
- signal ``pause`` / ``resume`` ({"by", "reason"}): held before the next side-effecting step.
- update ``cancel`` ({"by", "reason"}): before broadcast it ends CANCELLED; after broadcast on a
  chain that can replace inside the slot (EVM) a 0-value self-send takes the same nonce and the
  receipt decides CANCELLED or COMPLETED; elsewhere (Solana, Stellar) the bytes stop being
  re-sent and the chain decides: expired ⇒ CANCELLED, landed ⇒ COMPLETED. Refused once final.
- update ``approve`` ({"by"}): releases a withdrawal held in AWAITING_APPROVAL once its quorum
  of distinct approvers approved (the policy's rule: N approvers with a role, or N members of a
  group); an approver must not be the requester, nor approve twice.
- update ``reject`` ({"by", "reason"}): one approver (same rules as approve) ends a withdrawal held
  in AWAITING_APPROVAL CANCELLED with code REJECTED; its hold is released, nothing was signed.

Before funds are held the policy engine judges the withdrawal (in `validate_and_decide_withdrawal`;
`decide_withdrawal_policy` for runs without the `folded-steps` marker):
BLOCK and LIMIT_EXCEEDED end it FAILED (POLICY_BLOCKED, LIMIT_EXCEEDED) with nothing held or
sent; REQUIRE_APPROVAL holds it for its quorum. Runs started before the engine (no
`policy-engine` marker) keep the single threshold from `validate_withdrawal`.

Once an attempt is out (broadcast), only the chain ends the withdrawal: it lands (COMPLETED), our
cancellation lands (CANCELLED), it reverts or its slot is used by something else (FAILED), or every
attempt provably expires (re-signed, or CANCELLED when a cancellation asked for it). A fee bump,
cancellation or re-sign that cannot be made (KMS refuses, the fee cap, the node refuses the
replacement) never fails the withdrawal: it is alerted and the attempts already out are confirmed,
so a withdrawal is never FAILED while something of it can still pay, and its hold stays until then.
While it waits, EVM nonce gaps below it are filled (GAP_FILL children) and the run continues as
new every `rounds_per_run` rounds so its history stays bounded. Runs started before these rules
(no `exactly-once-under-chain-faults` marker) keep the earlier steps, so their histories replay.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.policy import PolicyActivities
    from activities.withdrawals import BumpInput, FinishInput, ResignInput, WithdrawalActivities
    from models import search_attributes
    from models.payloads import (
        LANDED_OUTCOMES,
        AlertEvent,
        ConfirmationResult,
        ConfirmingState,
        ControlEvent,
        GapFill,
        OnChainState,
        OperatorRequest,
        PolicyState,
        PolicyVerdict,
        PreparedAttempt,
        StatusChange,
        ValidationResult,
        WithdrawalInput,
        WithdrawalResult,
        WithdrawalState,
        WithdrawalStatus,
    )
    from workflows.common import RETRY_UNTIL_PERMANENT, ActivityMethod, ArgT, ResultT, SelfT, failure_of, local_step, short_step

CONFIRMATION_WAIT = timedelta(minutes=15)
CONFIRMATION_HEARTBEAT = timedelta(seconds=30)
# After an unexpected failure while confirming, look again this much later (never give up).
CONFIRMATION_RETRY = timedelta(seconds=30)
SENT = (WithdrawalStatus.BROADCASTING, WithdrawalStatus.CONFIRMING)
# Marker of the rules above (see the module docstring); runs without it keep the earlier steps.
CHAIN_FAULTS_PATCH = "exactly-once-under-chain-faults"
# Marker of the policy engine's decision and quorum approvals; runs without it keep the threshold.
POLICY_PATCH = "policy-engine"
# Marker: PAUSED / RESUMED are recorded one after the other, and a final withdrawal is unpaused.
ORDERED_CONTROLS_PATCH = "pause-records-in-order"
# Marker: a run ends only after its update handlers finished (a cancel that ends the withdrawal
# answers its caller instead of "the workflow completed before the update completed").
HANDLERS_FINISH_PATCH = "handlers-finish-before-end"
# Marker of fewer steps per withdrawal (issue 14: 11 activities -> 6, 82 history events -> 48):
# validate, sign and broadcast record the status they stand for themselves (VALIDATING, SIGNING,
# BROADCASTING then CONFIRMING) instead of a record_status activity each; validation and the
# policy's decision are one activity; and it implies the exactly-once-under-chain-faults,
# policy-engine and handlers-finish-before-end markers, which every new run took (each marker costs
# two history events). Runs without it keep the earlier steps.
FOLDED_STEPS_PATCH = "folded-steps"
# Marker of local steps (issue 14: 48 history events -> 33): the short steps before signing
# (validate-and-decide, reserve) and the final one (finish) run as local activities, each one
# marker in the history instead of an activity's three events and a workflow task's three. It
# implies folded-steps, which runs with it do not ask. Signing, broadcasting and confirming stay
# activities of their own (a signature may wait on a KMS; their retries are the server's).
LOCAL_STEPS_PATCH = "local-steps"
# Marker of one send step (issue 14: 33 history events -> 25): the first attempt is signed and
# sent by one activity, sign_and_broadcast_transfer (the bytes still committed before the send),
# and the VALIDATING search attribute is upserted only when a workflow task may end in it (a
# step handed to the server, a pause): otherwise the local steps after it end in the task that
# upserts the next status, and Temporal never showed VALIDATING anyway. When a hold
# or cancellation was recorded while it signed, it does not send: the workflow holds or cancels
# at its checkpoint and sends with broadcast_transfer as before. Implies local-steps.
ONE_SEND_STEP_PATCH = "one-send-step"
# Marker of a withdrawal concluded from the send step's own look at the chain (issue 14: 25
# history events -> 18, 8 billable actions -> 6): sign_and_broadcast_transfer waits up to the
# chain's finality_wait_in_send_step_seconds for a final outcome; one it returns (landed,
# reverted, slot lost) is concluded as the confirmation loop would have at its first round, with
# no await_confirmation. Implies one-send-step (asked first, so new runs record one marker);
# runs without it take the loop whatever the send step returned.
FINAL_IN_SEND_STEP_PATCH = "final-in-send-step"

FAILURE_OF_OUTCOME = {
    OnChainState.REVERTED: ("TRANSACTION_REVERTED", "the transaction was mined but reverted; its fee is spent"),
    OnChainState.SLOT_LOST: ("SLOT_CONSUMED_EXTERNALLY", "the nonce was used by a transaction that is not ours"),
}


class _Cancelled(Exception):
    pass


@workflow.defn(name="WithdrawalWorkflow")
class WithdrawalWorkflow:
    def __init__(self) -> None:
        self._status = WithdrawalStatus.PENDING
        # The status search attribute (what the Web UI filters on): PENDING from the API's start.
        self._status_shown = WithdrawalStatus.PENDING
        self._tx_hash: str | None = None
        self._attempts = 0
        self._error_code: str | None = None
        self._paused: OperatorRequest | None = None
        self._cancel: OperatorRequest | None = None
        self._approved: OperatorRequest | None = None
        self._approvals: list[OperatorRequest] = []  # distinct approvers, in order
        self._rejected: OperatorRequest | None = None
        self._verdict: PolicyVerdict | None = None  # the policy's decision (runs with the marker)
        self._validation: ValidationResult | None = None
        self._withdrawal_id = ""
        self._rules_v3 = False  # the exactly-once-under-chain-faults rules (see module docstring)
        self._cancel_sent = False
        self._replacing = True  # False once a replacement failed permanently (alerted)
        self._alerts: list[str] = []
        self._run_number = 1
        self._chain = ""
        self._pause_records = asyncio.Lock()
        self._folded_steps = False  # runs with FOLDED_STEPS_PATCH
        self._local_steps = False  # runs with LOCAL_STEPS_PATCH
        self._one_send_step = False  # runs with ONE_SEND_STEP_PATCH
        self._final_in_send_step = False  # runs with FINAL_IN_SEND_STEP_PATCH

    # --- reads -----------------------------------------------------------------------------
    @workflow.query(name="state")
    def state(self) -> WithdrawalState:
        return WithdrawalState(
            withdrawal_id=workflow.info().workflow_id.removeprefix("withdrawal-"),
            status=self._status,
            tx_hash=self._tx_hash,
            error_code=self._error_code,
            paused=self._paused is not None,
            paused_by=self._paused.by if self._paused else None,
            paused_reason=self._paused.reason if self._paused else None,
            cancel_requested_by=self._cancel.by if self._cancel else None,
            approved_by=self._approved.by if self._approved else None,
            alerts=list(self._alerts),
        )

    @workflow.query(name="policy")
    def policy(self) -> PolicyState:
        """The policy's decision and the approvals so far (shown in the Temporal UI's queries)."""
        return PolicyState(verdict=self._verdict, approvals=[a.by for a in self._approvals])

    # --- operator controls -----------------------------------------------------------------
    # A pause or resume arriving as the withdrawal ends may still be recording when it does: its
    # record is best effort then (a final withdrawal is never paused, whatever lands last).
    @workflow.signal(name="pause", unfinished_policy=workflow.HandlerUnfinishedPolicy.ABANDON)
    async def pause(self, request: OperatorRequest) -> None:
        if self._status.is_final or self._paused is not None:
            return
        self._paused = request
        workflow.upsert_search_attributes([search_attributes.PAUSED.value_set(True)])
        await self._record_pause(ControlEvent(self._wid(), "PAUSED", request.by, request.reason))

    @workflow.signal(name="resume", unfinished_policy=workflow.HandlerUnfinishedPolicy.ABANDON)
    async def resume(self, request: OperatorRequest) -> None:
        if self._paused is None:
            return
        self._paused = None
        workflow.upsert_search_attributes([search_attributes.PAUSED.value_set(False)])
        await self._record_pause(ControlEvent(self._wid(), "RESUMED", request.by, request.reason))

    async def _record_pause(self, event: ControlEvent) -> None:
        """Record PAUSED / RESUMED in the order they were applied: recorded side by side, a slow
        or retried PAUSED could land after its RESUMED and leave the withdrawal shown paused."""
        if not workflow.patched(ORDERED_CONTROLS_PATCH):
            await self._record(event)
            return
        async with self._pause_records:
            await self._record(event)

    @workflow.update(name="cancel")
    async def cancel(self, request: OperatorRequest) -> WithdrawalState:
        self._cancel = request
        await self._record(ControlEvent(self._wid(), "CANCEL_REQUESTED", request.by, request.reason))
        return self.state()

    @cancel.validator
    def _may_cancel(self, request: OperatorRequest) -> None:
        if not request.by:
            raise ValueError("cancel needs `by`: who is cancelling")
        if self._status.is_final:
            raise ApplicationError(f"withdrawal is already {self._status.value}", type="CANCEL_TOO_LATE")
        if self._cancel is not None:
            raise ApplicationError("a cancellation is already in progress", type="CANCEL_IN_PROGRESS")

    @workflow.update(name="approve")
    async def approve(self, request: OperatorRequest) -> WithdrawalState:
        self._approved = request
        if all(a.by != request.by for a in self._approvals):
            self._approvals.append(request)
        await self._record(ControlEvent(self._wid(), "APPROVED", request.by, request.reason))
        return self.state()

    @approve.validator
    def _may_approve(self, request: OperatorRequest) -> None:
        if self._status != WithdrawalStatus.AWAITING_APPROVAL:
            raise ApplicationError(f"withdrawal is {self._status.value}, not awaiting approval", type="NOT_AWAITING_APPROVAL")
        if not request.by:
            raise ValueError("approve needs `by`: who approves")
        if self._validation is not None and request.by == self._validation.requested_by:
            raise ApplicationError("the requester cannot approve their own withdrawal", type="SELF_APPROVAL")
        if self._verdict is not None:
            if any(a.by == request.by for a in self._approvals):
                raise ApplicationError(f"{request.by} approved already: a quorum needs distinct approvers", type="ALREADY_APPROVED")
            if self._verdict.approvers and request.by not in self._verdict.approvers:
                raise ApplicationError(
                    f"{request.by} is not in group {self._verdict.approver_group}, whose approvals this withdrawal needs",
                    type="NOT_AN_APPROVER",
                )

    @workflow.update(name="reject")
    async def reject(self, request: OperatorRequest) -> WithdrawalState:
        self._rejected = request
        await self._record(ControlEvent(self._wid(), "REJECTED", request.by, request.reason))
        return self.state()

    @reject.validator
    def _may_reject(self, request: OperatorRequest) -> None:
        if self._status != WithdrawalStatus.AWAITING_APPROVAL or self._rejected is not None:
            raise ApplicationError(f"withdrawal is {self._status.value}, not awaiting approval", type="NOT_AWAITING_APPROVAL")
        if not request.by:
            raise ValueError("reject needs `by`: who rejects")
        if not request.reason:
            raise ValueError("reject needs a `reason`")
        if self._validation is not None and request.by == self._validation.requested_by:
            raise ApplicationError("the requester cannot reject their own withdrawal", type="SELF_APPROVAL")
        if self._verdict is not None and self._verdict.approvers and request.by not in self._verdict.approvers:
            raise ApplicationError(
                f"{request.by} is not in group {self._verdict.approver_group}, whose approvers decide this withdrawal",
                type="NOT_AN_APPROVER",
            )

    # --- the process -----------------------------------------------------------------------
    @workflow.run
    async def run(self, request: WithdrawalInput) -> WithdrawalResult:
        wid = self._withdrawal_id = request.withdrawal_id
        self._chain = request.chain
        if request.resume is not None:
            return await self._resume(wid, request.resume)
        # Asked first: runs with it skip the older markers it implies (replays of runs without
        # it find those markers in their history as before).
        self._final_in_send_step = workflow.patched(FINAL_IN_SEND_STEP_PATCH)
        self._one_send_step = self._final_in_send_step or workflow.patched(ONE_SEND_STEP_PATCH)
        self._local_steps = self._one_send_step or workflow.patched(LOCAL_STEPS_PATCH)
        self._folded_steps = self._local_steps or workflow.patched(FOLDED_STEPS_PATCH)
        self._rules_v3 = self._folded_steps or workflow.patched(CHAIN_FAULTS_PATCH)
        judged_by_policy = self._folded_steps or workflow.patched(POLICY_PATCH)
        try:
            await self._checkpoint()
            await self._enter_step(wid, WithdrawalStatus.VALIDATING)
            if self._folded_steps:
                self._validation = await self._short_step(WithdrawalActivities.validate_and_decide, wid)
                self._verdict = self._validation.verdict
            else:
                self._validation = await self._step(WithdrawalActivities.validate, wid)
                if judged_by_policy:
                    self._verdict = await self._step(PolicyActivities.decide, wid)
            # Judged before anything is held: a refusal holds and sends nothing.
            if self._verdict is not None and self._verdict.error_code:
                return await self._finish(wid, WithdrawalStatus.FAILED, None, self._verdict.error_code, self._verdict.reason)
            await self._checkpoint()
            # Funds are held before an approver looks, so what they approve can be paid.
            await self._short_step(WithdrawalActivities.reserve, wid)
            if self._needs_approval():
                if not await self._await_approval(wid, self._validation):
                    return await self._finish(wid, WithdrawalStatus.FAILED, None, "APPROVAL_TIMEOUT", "not approved in time; nothing was sent")
                if self._rejected is not None:
                    # Only a reject update sets this, so runs without one take the same steps.
                    return await self._finish(wid, WithdrawalStatus.CANCELLED, None, "REJECTED", self._reject_reason())
            await self._checkpoint()
            await self._enter_step(wid, WithdrawalStatus.SIGNING)
            # Refused outright with no attempt of ours known anywhere: nothing went out, so the
            # withdrawal may fail (its nonce is handed back, and gap fills use it up).
            final: ConfirmationResult | None = None
            if self._one_send_step:
                signed = await self._step(WithdrawalActivities.sign_and_broadcast, wid)
                self._track(signed.attempt)
                if not signed.sent:  # held or cancelled through the API while it was signed
                    await self._send_after_checkpoint(wid)
                elif self._concluded_by_send_step(signed.outcome):
                    final = signed.outcome
            else:
                self._track(await self._step(WithdrawalActivities.prepare, wid))
                await self._send_after_checkpoint(wid)
            if final is not None:
                # Recorded as CONFIRMING by the send step; shown only if finishing is handed
                # to the server (the next upsert is the final status).
                self._status = WithdrawalStatus.CONFIRMING
                outcome = final
            else:
                await self._enter_step(wid, WithdrawalStatus.CONFIRMING)
                outcome = await self._confirm(wid)
        except _Cancelled:
            return await self._finish(wid, WithdrawalStatus.CANCELLED, None, "CANCELLED", self._cancel_reason())
        except ActivityError as e:
            code, message = failure_of(e)
            if code == "ALREADY_FINAL":
                return self._already_final(wid, e)
            return await self._finish(wid, WithdrawalStatus.FAILED, None, code, message)
        return await self._conclude(wid, outcome)

    def _concluded_by_send_step(self, outcome: ConfirmationResult | None) -> bool:
        """The send step saw the chain's final word: what _confirm returns at its first round
        (an expiry is never concluded here: it re-signs, or ends a cancellation)."""
        return self._final_in_send_step and outcome is not None and outcome.state not in (OnChainState.PENDING, OnChainState.EXPIRED)

    async def _send_after_checkpoint(self, wid: str) -> None:
        """Send the signed attempt once nothing holds or cancels the withdrawal."""
        await self._checkpoint()
        await self._enter_step(wid, WithdrawalStatus.BROADCASTING)
        await self._step(WithdrawalActivities.broadcast, wid)

    async def _resume(self, wid: str, carried: ConfirmingState) -> WithdrawalResult:
        """A continued run: the withdrawal is out on chain; pick up the confirmation loop."""
        self._rules_v3 = True
        self._local_steps = workflow.patched(LOCAL_STEPS_PATCH)
        self._folded_steps = self._local_steps  # implied, as in run(): its markers are not asked
        self._status = self._status_shown = WithdrawalStatus.CONFIRMING  # carried over by continue-as-new
        self._validation = carried.validation
        self._tx_hash, self._attempts = carried.tx_hash, carried.attempt_count
        self._cancel, self._cancel_sent = carried.cancel, carried.cancel_sent
        self._paused, self._approved = carried.paused, carried.approved
        self._replacing, self._alerts = carried.replacing, list(carried.alerts)
        self._run_number = carried.run_number
        try:
            outcome = await self._confirm(wid)
        except ActivityError as e:  # only a re-sign after a proven expiry: nothing of ours is out
            code, message = failure_of(e)
            if code == "ALREADY_FINAL":
                return self._already_final(wid, e)
            return await self._finish(wid, WithdrawalStatus.FAILED, None, code, message)
        return await self._conclude(wid, outcome)

    async def _conclude(self, wid: str, outcome: ConfirmationResult) -> WithdrawalResult:
        if outcome.state == OnChainState.CONFIRMED:
            return await self._finish(wid, WithdrawalStatus.COMPLETED, outcome)
        if outcome.state in (OnChainState.CANCELLED, OnChainState.EXPIRED):
            # EXPIRED reaches here only when a cancellation let the attempt die unreplaced.
            return await self._finish(wid, WithdrawalStatus.CANCELLED, outcome, "CANCELLED", self._cancel_reason())
        code, message = FAILURE_OF_OUTCOME[outcome.state]
        return await self._finish(wid, WithdrawalStatus.FAILED, outcome, code, message)

    async def _checkpoint(self) -> None:
        """Before a side-effecting step: hold while paused; stop here if cancelled."""
        if self._paused is not None:
            self._show_status_if_behind()
        await workflow.wait_condition(lambda: self._paused is None or self._cancel is not None)
        if self._cancel is not None:
            raise _Cancelled()

    def _needs_approval(self) -> bool:
        if self._verdict is not None:
            return self._verdict.approvals_required > 0
        return self._validation is not None and self._validation.needs_approval

    def _approved_enough(self) -> bool:
        if self._verdict is None:
            return self._approved is not None
        return len(self._approvals) >= self._verdict.approvals_required

    async def _await_approval(self, wid: str, validation: ValidationResult | None) -> bool:
        assert validation is not None
        await self._set_status(wid, WithdrawalStatus.AWAITING_APPROVAL)
        try:
            await workflow.wait_condition(
                lambda: self._approved_enough() or self._cancel is not None or self._rejected is not None,
                timeout=timedelta(seconds=validation.approval_timeout_seconds),
            )
        except TimeoutError:
            return False
        return True

    async def _confirm(self, wid: str) -> ConfirmationResult:
        """Wait for the chain's verdict; replace, cancel or re-sign inside the rules. Raises
        ActivityError only from a re-sign after a proven expiry (nothing of ours can land)."""
        validation = self._validation
        replaceable = validation is not None and validation.cancellable_after_broadcast
        rounds = 0
        while True:
            if self._cancel is not None and not self._cancel_sent and self._tx_hash is not None:
                if replaceable:
                    made = await self._replace(wid, WithdrawalActivities.cancel_by_replacement, "cancellation")
                    # Not made now (fee cap): tried again next round; refused for good: given up.
                    self._cancel_sent = made or not self._replacing
                else:
                    self._cancel_sent = True
            result = await self._await_outcome_or_cancel(wid, interruptible=self._cancel is None)
            if result is None:
                continue  # a cancellation arrived while waiting (or a failed look: look again)
            rounds += 1
            if result.state == OnChainState.EXPIRED and self._cancel is not None:
                return result  # cancelled: let it die instead of signing anew
            if result.state == OnChainState.EXPIRED and self._tx_hash is not None:
                # Provably never applied: a new attempt in a new slot is the same transfer.
                prepared = await self._step(WithdrawalActivities.resign_expired, ResignInput(wid, self._tx_hash))
                if prepared.blocked:
                    await self._alert(wid, prepared.blocked, f"re-sign: {prepared.blocked_reason}")
                    await self._sleep_unless_cancelled()
                    continue
                self._track(prepared)
                await self._send(wid)
                continue
            if result.state != OnChainState.PENDING:
                return result
            if self._cancel is not None and not replaceable:
                continue  # stop re-sending: the unsent bytes expire and the transfer is cancelled
            if result.block_number is None and self._tx_hash is not None:
                # Not mined within the chain's bump delay. EVM: first a nonce gap below ours,
                # which no fee can overcome; else replace inside the same nonce (a cancellation
                # not made yet is tried again at the top of the loop instead). Elsewhere the
                # same bytes are sent again.
                if await self._gaps_filled_below(wid):
                    pass
                elif self._rules_v3 and not replaceable:
                    await self._send(wid)
                elif self._rules_v3 and self._cancel is not None and not self._cancel_sent:
                    pass
                elif self._replacing:
                    await self._replace(wid, WithdrawalActivities.bump, "fee bump")
            if self._rules_v3 and validation is not None and 0 < validation.rounds_per_run <= rounds:
                await self._continue_as_new(wid)

    async def _replace(self, wid: str, activity: ActivityMethod[WithdrawalActivities, BumpInput, PreparedAttempt], what: str) -> bool:
        """Sign a replacement (fee bump or cancellation) and send it; True when one was made.
        Under the rules, one that cannot be made is alerted and the attempts already out stay
        in play; a permanent refusal (a disabled KMS key) also stops further replacements."""
        assert self._tx_hash is not None
        try:
            prepared: PreparedAttempt = await self._step(activity, BumpInput(wid, self._tx_hash))
        except ActivityError as e:
            if not self._rules_v3:
                raise
            code, message = failure_of(e)
            self._replacing = False
            await self._alert(wid, "REPLACEMENT_FAILED", f"{what}: {code}: {message}")
            return False
        if prepared.blocked:
            await self._alert(wid, prepared.blocked, f"{what}: {prepared.blocked_reason}")
            return False
        self._track(prepared)
        await self._send(wid)
        return True

    async def _send(self, wid: str) -> None:
        """Broadcast the latest attempt. Under the rules a refusal while an earlier attempt may
        still land is alerted, never a failure: the chain decides which one lands."""
        try:
            await self._step(WithdrawalActivities.broadcast, wid)
        except ActivityError as e:
            if not self._rules_v3:
                raise
            code, message = failure_of(e)
            await self._alert(wid, "BROADCAST_REFUSED", f"{code}: {message}")

    async def _gaps_filled_below(self, wid: str) -> bool:
        """EVM: start a GAP_FILL child for each nonce below ours that nothing of ours will use.
        True when there was such a gap (bumping our own fee cannot help then)."""
        if not self._rules_v3 or self._validation is None or not self._validation.fills_sequence_gaps:
            return False
        fill: GapFill = await self._step(WithdrawalActivities.fill_sequence_gaps, wid)
        for filler in fill.fillers:
            try:
                await workflow.start_child_workflow(
                    WithdrawalWorkflow.run,
                    WithdrawalInput(
                        withdrawal_id=filler, chain=workflow.info().search_attributes.get("CustodyChain", [""])[0] if False else self._chain
                    ),
                    id=f"withdrawal-{filler}",
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                    static_summary=f"Nonce gap fill below withdrawal {wid}",
                )
            except WorkflowAlreadyStartedError:
                pass  # started by an earlier round or run: the same row, the same nonce
        if fill.gaps:
            await self._alert(wid, "NONCE_GAP", f"nonces {fill.gaps} below this one were unused; filling them")
        return bool(fill.gaps)

    async def _sleep_unless_cancelled(self) -> None:
        try:
            await workflow.wait_condition(lambda: self._cancel is not None, timeout=CONFIRMATION_RETRY)
        except TimeoutError:
            pass

    async def _continue_as_new(self, wid: str) -> None:
        """Bound the history: a new run carries the state of the confirmation loop."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        assert self._validation is not None
        workflow.continue_as_new(
            WithdrawalInput(
                withdrawal_id=wid,
                chain=self._chain,
                resume=ConfirmingState(
                    validation=self._validation,
                    tx_hash=self._tx_hash,
                    attempt_count=self._attempts,
                    cancel=self._cancel,
                    cancel_sent=self._cancel_sent,
                    paused=self._paused,
                    approved=self._approved,
                    replacing=self._replacing,
                    alerts=list(self._alerts),
                    run_number=self._run_number + 1,
                ),
            )
        )

    async def _await_outcome_or_cancel(self, wid: str, *, interruptible: bool) -> ConfirmationResult | None:
        waiting = workflow.start_activity_method(
            WithdrawalActivities.await_confirmation,
            wid,
            start_to_close_timeout=CONFIRMATION_WAIT,
            heartbeat_timeout=CONFIRMATION_HEARTBEAT,
            retry_policy=RETRY_UNTIL_PERMANENT,
        )
        if not interruptible:
            return await self._outcome(wid, waiting)
        cancelled = asyncio.ensure_future(workflow.wait_condition(lambda: self._cancel is not None))
        done, _ = await workflow.wait([waiting, cancelled], return_when=asyncio.FIRST_COMPLETED)
        if waiting in done:
            cancelled.cancel()
            return await self._outcome(wid, waiting)
        waiting.cancel()
        try:
            await waiting
        except ActivityError:
            pass  # cancelled while polling: a read-only activity, nothing to undo
        return None

    async def _outcome(self, wid: str, waiting: asyncio.Future[ConfirmationResult]) -> ConfirmationResult | None:
        try:
            return await waiting
        except ActivityError as e:
            if not self._rules_v3:
                raise
            # Reading the chain failed for good (it should not): never conclude from that.
            code, message = failure_of(e)
            await self._alert(wid, "CONFIRMATION_ERROR", f"{code}: {message}")
            await self._sleep_unless_cancelled()
            return None

    def _already_final(self, wid: str, error: ActivityError) -> WithdrawalResult:
        """A reset run found the withdrawal finished: report the stored outcome, change nothing."""
        details = error.cause.details if isinstance(error.cause, ApplicationError) else ()
        stored = details[0].get("status") if details and isinstance(details[0], dict) else None
        self._status = WithdrawalStatus(stored) if stored else WithdrawalStatus.FAILED
        self._show_status()
        workflow.logger.warning("withdrawal already %s; this run changes nothing", self._status.value)
        return WithdrawalResult(wid, self._status, self._tx_hash, None, "already final; run made no changes")

    # --- helpers ---------------------------------------------------------------------------
    def _wid(self) -> str:
        return self._withdrawal_id or workflow.info().workflow_id.removeprefix("withdrawal-")

    def _cancel_reason(self) -> str:
        if self._cancel is None:
            return "cancelled"
        return f"cancelled by {self._cancel.by}" + (f": {self._cancel.reason}" if self._cancel.reason else "")

    def _reject_reason(self) -> str:
        assert self._rejected is not None
        return f"rejected by {self._rejected.by}: {self._rejected.reason}"

    def _track(self, prepared: PreparedAttempt) -> None:
        self._tx_hash = prepared.tx_hash
        self._attempts = prepared.attempt_count

    async def _step(self, activity: ActivityMethod[SelfT, ArgT, ResultT], arg: ArgT) -> ResultT:
        return await short_step(activity, arg)

    async def _short_step(self, activity: ActivityMethod[SelfT, ArgT, ResultT], arg: ArgT) -> ResultT:
        """A step run locally in runs with LOCAL_STEPS_PATCH, as an activity in earlier ones."""
        if self._local_steps:
            return await local_step(activity, arg, before_handing_over=self._show_status_if_behind)
        return await short_step(activity, arg)

    async def _record(self, event: ControlEvent) -> None:
        await self._step(WithdrawalActivities.record_control, event)

    async def _alert(self, wid: str, code: str, message: str) -> None:
        """Recorded, counted and logged once per code and message; shown by the `state` query."""
        key = f"{code}: {message}"
        if key in self._alerts:
            return
        self._alerts.append(key)
        workflow.logger.warning("withdrawal alert %s: %s", code, message)
        await self._step(WithdrawalActivities.record_alert, AlertEvent(wid, code, message))

    async def _enter_step(self, wid: str, status: WithdrawalStatus) -> None:
        """The status of the step that follows; the step's activity records it (marker runs)."""
        if not self._folded_steps:
            await self._set_status(wid, status)
            return
        self._status = status
        if self._one_send_step and status == WithdrawalStatus.VALIDATING:
            # Its local steps end in the workflow task that shows the next status: shown only if
            # the task may end in it (_show_status_if_behind).
            return
        self._show_status()

    def _show_status(self) -> None:
        self._status_shown = self._status
        workflow.upsert_search_attributes([search_attributes.STATUS.value_set(self._status.value)])

    def _show_status_if_behind(self) -> None:
        """The workflow task may end here (a local step handed to the server, a pause): show the
        status it ends in."""
        if self._status_shown != self._status:
            self._show_status()

    async def _set_status(self, wid: str, status: WithdrawalStatus) -> None:
        self._status = status
        self._show_status()
        await self._step(WithdrawalActivities.record_status, StatusChange(wid, status))

    async def _finish(
        self,
        wid: str,
        status: WithdrawalStatus,
        outcome: ConfirmationResult | None,
        code: str | None = None,
        message: str | None = None,
    ) -> WithdrawalResult:
        if outcome is not None and outcome.tx_hash:
            self._tx_hash = outcome.tx_hash
        if self._paused is not None and workflow.patched(ORDERED_CONTROLS_PATCH):
            self._paused = None  # nothing is left to hold: a final withdrawal is not paused
            workflow.upsert_search_attributes([search_attributes.PAUSED.value_set(False)])
        await self._short_step(
            WithdrawalActivities.finish,
            FinishInput(wid, status, outcome, error_code=code, error_message=message),
        )
        self._status, self._error_code = status, code
        self._show_status()
        if code:
            workflow.logger.warning("withdrawal ended: %s %s", code, message)
        if self._folded_steps or workflow.patched(HANDLERS_FINISH_PATCH):
            await workflow.wait_condition(workflow.all_handlers_finished)
        # The result's tx_hash is the withdrawal's (finish_withdrawal): a transaction of ours on
        # chain, never an attempt that was signed but did not land.
        landed = outcome.tx_hash if outcome is not None and outcome.state in LANDED_OUTCOMES else None
        return WithdrawalResult(wid, status, landed, code, message)
