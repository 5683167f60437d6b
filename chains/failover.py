"""One chain over several node endpoints: the `Chain` protocol, delegated to one adapter per
endpoint (same family, same settings, one URL each), with a circuit breaker per endpoint
(chains/health.py). Built by chains/registry.py when `rpc_urls` / `horizon_urls` hold two or
more URLs; with one URL the adapter is used as it is.

- Reads go to the first healthy endpoint in configured order; a connectivity failure
  (ChainUnavailable from the wire, or no answer within `failover.request_timeout_seconds`)
  moves on to the next. When every breaker is open the endpoints are tried anyway, in order;
  ChainUnavailable only if none answers.
- Broadcasts go to every healthy endpoint at once: the same signed bytes are one transfer however
  many nodes hear them. The best answer wins ("accepted" > "known" > the adapter's other
  answers > a transaction error); a connectivity error on one endpoint never fails a broadcast
  that another endpoint answered.
- A verdict that ends a withdrawal (`transfer_status` SLOT_LOST or EXPIRED) needs a second
  endpoint's agreement. A second endpoint that disagrees or cannot be asked turns it into
  PENDING (the detail says why; the confirmation loop asks again). If the second endpoint sees
  one of our attempts landed (CONFIRMED, REVERTED, CANCELLED), that verdict is returned: the
  first endpoint is behind or wrong, and a landed verdict is what one endpoint is trusted with.
- Only connectivity failures count against an endpoint (chains/health.py); an answer about the
  transaction (nonce too low, already known, underpriced, tx_bad_seq, a preflight error) is
  the node's answer and goes back to the caller unchanged.

Logs and metrics name endpoints by position and host (`0-rpc.example.com`), never by URL, and
the ChainUnavailable raised here has every configured URL (and its path, query and user info)
redacted from its message: RPC URLs often carry API keys.
"""

from __future__ import annotations

import asyncio
import logging
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn, TypeVar, cast

from chains.base import Chain, ChainHistory, DigestSigner, Funding, Memo, SignedTransfer, SigningRequest, SweepQuote, TransferIntent, TransferStatus
from chains.health import BreakerState, CircuitBreaker, Permit, endpoint_label, is_connectivity_failure
from core import metrics
from core.errors import ChainUnavailable, CustodyError
from core.redaction import url_secrets
from core.settings import AssetSpec, ChainSettingsBase
from models.payloads import OnChainState

log = logging.getLogger(__name__)

T = TypeVar("T")
Call = Callable[[Chain], Awaitable[T]]

# Verdicts that end a withdrawal without a landed transaction: two endpoints must agree.
NEEDS_AGREEMENT = frozenset({OnChainState.SLOT_LOST, OnChainState.EXPIRED})
# One of our attempts is in a block: one endpoint's word is enough, as with a single endpoint.
LANDED = frozenset({OnChainState.CONFIRMED, OnChainState.REVERTED, OnChainState.CANCELLED})
# Broadcast answers, best first; any other answer an adapter gives ranks after these.
BROADCAST_RANK = ("accepted", "known", "applied_failed")
# The protocol's class-level traits (family, replaceable_in_slot, ...): copied from the adapters.
CHAIN_TRAITS = tuple(n for n, hint in typing.get_type_hints(Chain).items() if typing.get_origin(hint) is ClassVar)


@dataclass
class Endpoint:
    label: str
    adapter: Chain
    breaker: CircuitBreaker


@dataclass
class _Outcome:
    endpoint: Endpoint
    result: Any = None
    error: BaseException | None = None

    @property
    def answered(self) -> bool:
        """A result, or an error that is the node's answer (no ChainUnavailable of any kind)."""
        return self.error is None or not isinstance(self.error, ChainUnavailable)

    def unwrap(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class FailoverChain:
    """A `Chain` over several endpoints of one network (see the module docstring)."""

    def __init__(self, name: str, settings: ChainSettingsBase, adapters: Sequence[Chain], urls: Sequence[str]) -> None:
        if len(adapters) < 2 or len(adapters) != len(urls):
            raise ValueError("a failover chain has two or more endpoints, one adapter each")
        self.name = name
        self.settings = settings
        # The family's traits (every ClassVar of the protocol), as its adapters have them.
        for trait in CHAIN_TRAITS:
            setattr(self, trait, getattr(adapters[0], trait))
        cfg = settings.failover
        self.endpoints = [
            Endpoint(endpoint_label(i, url), adapter, CircuitBreaker(cfg.failure_threshold, cfg.cooldown_seconds))
            for i, (adapter, url) in enumerate(zip(adapters, urls, strict=True))
        ]
        # Longest first, so a URL is replaced whole before its path is.
        self._secrets = sorted({s for url in urls for s in url_secrets(url)}, key=len, reverse=True)
        for endpoint in self.endpoints:
            metrics.RPC_ENDPOINT_UP.labels(chain=name, endpoint=endpoint.label).set(1)

    # --- no node involved: the first adapter answers for all ----------------------------------
    def normalize_address(self, address: str) -> str:
        return self.endpoints[0].adapter.normalize_address(address)

    def address_from_public_key(self, public_key: bytes) -> str:
        return self.endpoints[0].adapter.address_from_public_key(public_key)

    def validate_memo(self, memo: Memo) -> Memo:
        return self.endpoints[0].adapter.validate_memo(memo)

    def asset(self, symbol: str) -> AssetSpec:
        return self.settings.asset(symbol)

    def describe_unsigned(self, unsigned: bytes) -> SigningRequest:
        return self.endpoints[0].adapter.describe_unsigned(unsigned)

    def account_of(self, destination: str) -> str:
        # Every adapter is also a ChainHistory (Endpoint.adapter is typed by the Chain protocol only).
        return cast(ChainHistory, self.endpoints[0].adapter).account_of(destination)

    # --- reconciliation history (chains.base.ChainHistory): the first healthy endpoint ---------
    # A run reads everything after `history_point` from whichever endpoint answers; if that
    # changes mid-run the report may show drift that the next run no longer has.
    async def history_point(self) -> Any:
        return await self._read(lambda c: c.history_point())  # type: ignore[attr-defined]

    async def discover_transfers(self, *args: Any, **kwargs: Any) -> Any:
        return await self._read(lambda c: c.discover_transfers(*args, **kwargs), timed=False)  # type: ignore[attr-defined]

    async def ledger_balance(self, *args: Any) -> Any:
        return await self._read(lambda c: c.ledger_balance(*args))  # type: ignore[attr-defined]

    async def recheck_landed(self, *args: Any) -> Any:
        return await self._read(lambda c: c.recheck_landed(*args))  # type: ignore[attr-defined]

    async def consumed_slots(self, *args: Any) -> Any:
        return await self._read(lambda c: c.consumed_slots(*args))  # type: ignore[attr-defined]

    async def side_costs(self, *args: Any) -> Any:
        return await self._read(lambda c: c.side_costs(*args))  # type: ignore[attr-defined]

    def assets(self) -> list[AssetSpec]:
        return self.settings.assets()

    # --- reads: the first healthy endpoint that answers ----------------------------------------
    async def preflight(self, intent: TransferIntent) -> None:
        await self._read(lambda c: c.preflight(intent))

    async def check_account_minimum(self, destination: str, asset: AssetSpec, amount: int) -> None:
        await self._read(lambda c: c.check_account_minimum(destination, asset, amount))

    async def account_exists(self, address: str) -> bool:
        return await self._read(lambda c: c.account_exists(address))

    async def balance(self, address: str, asset: AssetSpec) -> int:
        return await self._read(lambda c: c.balance(address, asset))

    async def estimate_max_fee(self, intent: TransferIntent, **kwargs: Any) -> int:
        return await self._read(lambda c: c.estimate_max_fee(intent, **kwargs))

    async def sweep_quote(self, intent: TransferIntent) -> SweepQuote:
        return await self._read(lambda c: c.sweep_quote(intent))

    async def next_sequence(self, sender: str, highest_claimed: int | None) -> int | None:
        return await self._read(lambda c: c.next_sequence(sender, highest_claimed))

    async def settled_sequence(self, sender: str) -> int | None:
        return await self._read(lambda c: c.settled_sequence(sender))

    async def sign_transfer(
        self,
        intent: TransferIntent,
        sequence: int | None,
        sign: DigestSigner,
        replacing: SignedTransfer | None = None,
        **kwargs: Any,  # channel=, where the family has channel accounts
    ) -> SignedTransfer:
        """Fees, blockhash or ledger come from one endpoint, then the key signs. If that endpoint
        fails after the signature, those bytes are dropped (never stored, never sent) and the next
        endpoint signs anew: only the transfer returned here is persisted and broadcast. No read
        timeout: a KMS signature may legitimately take its time."""
        return await self._read(lambda c: c.sign_transfer(intent, sequence, sign, replacing=replacing, **kwargs), timed=False)

    async def faucet(self, address: str, asset: AssetSpec, amount: int | None) -> Funding:
        """Test networks only; waits for the funding to land (the adapters' own timeouts)."""
        return await self._read(lambda c: c.faucet(address, asset, amount), timed=False)

    # --- every healthy endpoint ----------------------------------------------------------------
    async def broadcast(self, transfer: SignedTransfer) -> str:
        outcomes = await self._everywhere(
            lambda c: c.broadcast(transfer),
            decisive=lambda result: result in ("accepted", "known"),
            grace=self.settings.failover.broadcast_grace_seconds,
            timeout=None,  # the adapters' own (Horizon holds a submission until the ledger closes)
        )
        answers = [o for o in outcomes if o.error is None]
        if answers:
            best = min(answers, key=lambda o: _rank(o.result))
            if len(answers) < len(outcomes):
                log.info(
                    "broadcast answered by some endpoints only",
                    extra={"chain": self.name, "tx_hash": transfer.tx_hash, "answers": {o.endpoint.label: _describe(o) for o in outcomes}},
                )
            return str(best.result)
        return self._no_answer("broadcast", outcomes)

    async def is_known(self, tx_hash: str) -> bool:
        """Whether any endpoint has seen the transaction (broadcasts go to all of them)."""
        outcomes = await self._everywhere(lambda c: c.is_known(tx_hash), decisive=lambda known: known is True, grace=0.0, timeout=self._timeout)
        answers = [o.result for o in outcomes if o.error is None]
        if answers:
            return any(answers)
        return self._no_answer("is_known", outcomes)

    # --- outcome: a verdict that ends a withdrawal needs two endpoints ------------------------
    async def transfer_status(self, intent: TransferIntent, attempts: list[SignedTransfer]) -> TransferStatus:
        call: Call[TransferStatus] = lambda c: c.transfer_status(intent, attempts)  # noqa: E731
        first, status = await self._read_from(call, self._timeout)
        if status.state not in NEEDS_AGREEMENT:
            return status
        second = await self._second_opinion(first, call)
        if isinstance(second, str):
            return self._held(status, f"{status.state.value} from endpoint {first.label} needs a second endpoint: {second}")
        other, confirmation = second
        if confirmation.state == status.state:
            return confirmation
        if confirmation.state in LANDED:
            log.warning(
                "endpoints disagree: a landed verdict wins",
                extra={
                    "chain": self.name,
                    "endpoint": first.label,
                    "state": status.state.value,
                    "other_endpoint": other.label,
                    "other_state": confirmation.state.value,
                },
            )
            return confirmation
        return self._held(
            status,
            f"{status.state.value} from endpoint {first.label}, but endpoint {other.label} says "
            f"{confirmation.state.value}" + (f" ({confirmation.detail})" if confirmation.detail else ""),
        )

    def _held(self, status: TransferStatus, why: str) -> TransferStatus:
        metrics.RPC_VERDICTS_HELD.labels(chain=self.name, state=status.state.value).inc()
        log.warning("verdict held as PENDING", extra={"chain": self.name, "state": status.state.value, "reason": why})
        return TransferStatus(OnChainState.PENDING, tx_hash=status.tx_hash, detail=why)

    async def _second_opinion(self, first: Endpoint, call: Call[TransferStatus]) -> tuple[Endpoint, TransferStatus] | str:
        """Another endpoint's status, or why there is none. Only endpoints whose breaker lets a
        call through are asked (an open one gets its trial call after the cool-down); one that
        fails or raises gives no agreement."""
        reasons = []
        for endpoint in self.endpoints:
            if endpoint is first:
                continue
            permit = endpoint.breaker.acquire()
            if permit is None:
                reasons.append(f"{endpoint.label} is open (unreachable lately)")
                continue
            outcome = await self._attempt(endpoint, permit, call, self._timeout)
            if outcome.error is None:
                return endpoint, outcome.result
            reasons.append(f"{endpoint.label} failed: {type(outcome.error).__name__}")
        return "; ".join(reasons)

    # --- operators and tests --------------------------------------------------------------------
    def health(self) -> list[dict[str, Any]]:
        """Each endpoint's breaker state."""
        return [{"endpoint": e.label, "state": e.breaker.state.value, "consecutive_failures": e.breaker.consecutive_failures} for e in self.endpoints]

    async def close(self) -> None:
        """Close the adapters' HTTP pools on this event loop."""
        for endpoint in self.endpoints:
            closer = getattr(endpoint.adapter, "close", None) or getattr(endpoint.adapter, "aclose", None)
            if closer is not None:
                await closer()

    aclose = close

    # --- machinery ----------------------------------------------------------------------------
    @property
    def _timeout(self) -> float:
        return self.settings.failover.request_timeout_seconds

    async def _read(self, call: Call[T], *, timed: bool = True) -> T:
        return (await self._read_from(call, self._timeout if timed else None))[1]

    async def _read_from(self, call: Call[T], timeout: float | None) -> tuple[Endpoint, T]:
        """(endpoint, result) of the first endpoint that answers: the healthy ones in order, then,
        if none did, the open ones anyway. An error that is the node's answer is raised at once."""
        tried: list[_Outcome] = []
        skipped: list[Endpoint] = []
        for endpoint in self.endpoints:
            permit = endpoint.breaker.acquire()
            if permit is None:
                skipped.append(endpoint)
                continue
            outcome = await self._attempt(endpoint, permit, call, timeout)
            if outcome.answered:
                return endpoint, outcome.unwrap()
            tried.append(outcome)
        for endpoint in skipped:
            outcome = await self._attempt(endpoint, endpoint.breaker.force(), call, timeout)
            if outcome.answered:
                return endpoint, outcome.unwrap()
            tried.append(outcome)
        raise self._unavailable("read", tried)

    async def _everywhere(self, call: Call[T], *, decisive: Callable[[Any], bool], grace: float, timeout: float | None) -> list[_Outcome]:
        """`call` on every healthy endpoint at once; if none of them answered, on the open ones.
        Once an answer is `decisive`, the others get `grace` seconds, then are cancelled."""
        permits = [(e, e.breaker.acquire()) for e in self.endpoints]
        outcomes = await self._concurrently([(e, p) for e, p in permits if p is not None], call, decisive, grace, timeout)
        if not any(o.answered for o in outcomes):
            rest = [(e, e.breaker.force()) for e, p in permits if p is None]
            outcomes += await self._concurrently(rest, call, decisive, grace, timeout)
        order = {id(e): i for i, e in enumerate(self.endpoints)}
        return sorted(outcomes, key=lambda o: order[id(o.endpoint)])

    async def _concurrently(
        self,
        calls: list[tuple[Endpoint, Permit]],
        call: Call[T],
        decisive: Callable[[Any], bool],
        grace: float,
        timeout: float | None,
    ) -> list[_Outcome]:
        """Once an answer is `decisive` the others get `grace` seconds; once any endpoint answered,
        the others get at most `request_timeout_seconds` (a hung node must not hold up an answer
        in hand for the adapters' own, much longer, timeouts). Then they are cancelled."""
        loop = asyncio.get_running_loop()
        tasks = {asyncio.ensure_future(self._attempt(e, p, call, timeout)): e for e, p in calls}
        outcomes: list[_Outcome] = []
        pending = set(tasks)
        deadline: float | None = None
        try:
            while pending:
                wait = None if deadline is None else max(deadline - loop.time(), 0)
                done, pending = await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    break  # out of patience for the rest
                for task in done:
                    outcome = task.result()
                    outcomes.append(outcome)
                    if outcome.error is None and decisive(outcome.result):
                        limit = loop.time() + grace
                    elif outcome.answered:
                        limit = loop.time() + self._timeout
                    else:
                        continue
                    deadline = limit if deadline is None else min(deadline, limit)
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        for task in pending:
            log.info("endpoint still busy after another answered: call cancelled", extra={"chain": self.name, "endpoint": tasks[task].label})
        return outcomes

    async def _attempt(self, endpoint: Endpoint, permit: Permit, call: Call[T], timeout: float | None) -> _Outcome:
        """One call to one endpoint; its outcome goes to the endpoint's breaker. Never raises
        (but for cancellation): the outcome carries the error."""
        before = endpoint.breaker.state
        try:
            try:
                result = await asyncio.wait_for(call(endpoint.adapter), timeout)
            except TimeoutError as e:
                raise ChainUnavailable(f"{self.name}: no answer within {timeout} s", chain=self.name) from e
        except ChainUnavailable as e:
            if is_connectivity_failure(e):
                permit.failed()
                metrics.RPC_ENDPOINT_FAILURES.labels(chain=self.name, endpoint=endpoint.label).inc()
                log.warning(
                    "endpoint unreachable",
                    extra={"chain": self.name, "endpoint": endpoint.label, "error": self._redact(str(e))[:300]},
                )
            else:
                permit.answered()  # "not now" about this request, said by a node that is up
            outcome = _Outcome(endpoint, error=e)
        except CustodyError as e:  # the node's answer about the request: the endpoint is up
            permit.answered()
            outcome = _Outcome(endpoint, error=e)
        except asyncio.CancelledError:
            permit.release()
            raise
        except Exception as e:  # an adapter defect says nothing about the endpoint
            permit.release()
            outcome = _Outcome(endpoint, error=e)
        else:
            permit.answered()
            outcome = _Outcome(endpoint, result=result)
        self._report(endpoint, before)
        return outcome

    def _report(self, endpoint: Endpoint, before: BreakerState) -> None:
        after = endpoint.breaker.state
        if after == before:
            return
        metrics.RPC_ENDPOINT_UP.labels(chain=self.name, endpoint=endpoint.label).set(0 if after == BreakerState.OPEN else 1)
        level = logging.WARNING if after == BreakerState.OPEN else logging.INFO
        log.log(level, "endpoint circuit %s", after.value, extra={"chain": self.name, "endpoint": endpoint.label})

    def _no_answer(self, what: str, outcomes: list[_Outcome]) -> NoReturn:
        """No endpoint gave a result: raise the first node's refusal, as one endpoint would have,
        else ChainUnavailable."""
        for outcome in outcomes:
            if outcome.answered and outcome.error is not None:
                raise outcome.error
        raise self._unavailable(what, outcomes)

    def _unavailable(self, what: str, outcomes: list[_Outcome]) -> ChainUnavailable:
        reasons = "; ".join(f"{o.endpoint.label}: {self._redact(str(o.error))}" for o in outcomes) or "no endpoint"
        return ChainUnavailable(f"{self.name}: no endpoint answered ({what}): {reasons}", chain=self.name)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text


def _rank(result: Any) -> int:
    return BROADCAST_RANK.index(result) if result in BROADCAST_RANK else len(BROADCAST_RANK)


def _describe(outcome: _Outcome) -> str:
    return str(outcome.result) if outcome.error is None else type(outcome.error).__name__
