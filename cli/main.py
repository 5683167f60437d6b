"""`custody`: the operator's command line. It talks to the custody API (CUSTODY_API_URL,
CUSTODY_API_KEY) and, for batch actions, to Temporal directly (CUSTODY_TEMPORAL_ADDRESS).

    custody withdrawals pause <id> --reason "..."     custody withdrawals resume <id>
    custody withdrawals cancel <id> --reason "..."    custody withdrawals approve <id>
    custody withdrawals reject <id> --reason "..."
    custody withdrawals list --status SIGNING --chain anvil
    custody withdrawals show <id>          custody withdrawals wait <id> [--until AWAITING_APPROVAL]
    custody withdrawals pause-all --chain anvil --reason "RPC incident"   (and resume-all)
    custody wallets create --chain anvil --label hot | list | balances <id> | fund <id> --amount 1
    custody wallets trust <id> --asset USDC               (Stellar trustline)
    custody pools show <chain> | rebalance <chain> | lease <chain> | return <chain> <lease id>
    custody channels show <chain> | sync <chain>           (Stellar channel accounts)
    custody reconcile --chain anvil                         (chain vs database, now; operators)
    custody chaos -n 200 --seed 1                           (exactly-once under faults, on a stack of its own)
    custody apikeys create --owner alice --name laptop [--role USER] [--scope wallets:read] [--bootstrap]
    custody apikeys list [--owner alice] | revoke <key id>  (admins)
    custody users list | show <id> | set-roles <id> --role USER | block <id> -r "..." | unblock <id>
    custody wallets freeze <id> -r "..." | unfreeze <id>   (admins)
    custody policy show | versions | add-rule --json '{...}' | update-rule <id> --json '{...}' | remove-rule <id>
    custody policy set --file policy.json | group <name> --member a --member b | allowlist-only --wallet <id>
    custody policy test --wallet <id> --to <address> --asset ETH --amount 1.5   (dry run: which rule and why)
    custody addresses list | add --chain anvil --address 0x... --label desk | remove <id> | approve <id>
    custody webhooks create --url https://... [--event withdrawal.completed] | list | show <id> | delete <id>
    custody webhooks deliveries <webhook id> [--state FAILED] | delivery <delivery id> | redeliver <delivery id>
    custody worker | custody api
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from datetime import UTC
from typing import Annotated, Any

import httpx
import typer

app = typer.Typer(help="custody: wallets, withdrawals and operator controls", no_args_is_help=True)
wallets = typer.Typer(help="create, list, fund wallets", no_args_is_help=True)
withdrawals = typer.Typer(help="submit, inspect and steer withdrawals", no_args_is_help=True)
app.add_typer(wallets, name="wallets")
pools = typer.Typer(help="key pools: HODL, Bank and single-use Explorer keys (operators)", no_args_is_help=True)
app.add_typer(withdrawals, name="withdrawals")
app.add_typer(pools, name="pools")
channels = typer.Typer(help="Stellar channel accounts: many payments in flight per wallet (operators)", no_args_is_help=True)
app.add_typer(channels, name="channels")
apikeys = typer.Typer(help="API keys: create (shown once), list, revoke (admins)", no_args_is_help=True)
app.add_typer(apikeys, name="apikeys")
users = typer.Typer(help="users: roles, blocks (admins)", no_args_is_help=True)
app.add_typer(users, name="users")
audit_cli = typer.Typer(help="the tamper-evident audit log (administrators)", no_args_is_help=True)
app.add_typer(audit_cli, name="audit")
policy_cli = typer.Typer(
    help="the policy engine: ordered rules, quorums, limits (admins change it; operators read and test it)", no_args_is_help=True
)
app.add_typer(policy_cli, name="policy")
addresses = typer.Typer(help="your address book: trusted destinations (usable after a cooling period or a quorum's approval)", no_args_is_help=True)
app.add_typer(addresses, name="addresses")
webhooks_cli = typer.Typer(help="webhook endpoints, their deliveries and redeliveries", no_args_is_help=True)
app.add_typer(webhooks_cli, name="webhooks")

ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="why (kept in the withdrawal's history)")]


def _api() -> httpx.Client:
    url = os.environ.get("CUSTODY_API_URL", "http://127.0.0.1:8000")
    key = os.environ.get("CUSTODY_API_KEY", "dev-alice-key")
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _call(method: str, path: str, **kwargs: Any) -> Any:
    try:
        with _api() as client:
            response = client.request(method, path, **kwargs)
    except httpx.HTTPError as e:
        typer.echo(f"error: cannot reach the custody API: {e}", err=True)
        raise typer.Exit(3) from e
    body = response.json() if response.content else {}
    if response.status_code >= 400:
        error = body.get("error", {})
        typer.echo(f"error: {error.get('code', response.status_code)}: {error.get('message', response.text)}", err=True)
        raise typer.Exit(1)
    return body


def _print(body: Any) -> None:
    typer.echo(json.dumps(body, indent=2, default=str))


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    def cell(row: dict[str, Any], column: str) -> str:
        value = row.get(column)
        return "" if value is None else str(value)

    widths = {c: max([len(c), *(len(cell(r, c)) for r in rows)]) for c in columns}
    typer.echo("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        typer.echo("  ".join(cell(row, c).ljust(widths[c]) for c in columns))


# --- wallets ---------------------------------------------------------------------------------
@wallets.command("create")
def wallet_create(chain: str = typer.Option(...), label: str = typer.Option("default")) -> None:
    _print(_call("POST", "/v1/wallets", json={"chain": chain, "label": label}))


@wallets.command("list")
def wallet_list() -> None:
    _table(_call("GET", "/v1/wallets")["items"], ["id", "chain", "label", "status", "address", "signer_backend"])


@wallets.command("balances")
def wallet_balances(wallet_id: str) -> None:
    _table(_call("GET", f"/v1/wallets/{wallet_id}/balances")["balances"], ["asset", "balance", "reserved", "contract"])


@wallets.command("fund")
def wallet_fund(
    wallet_id: str,
    amount: str | None = typer.Option(None, help="decimal; leave out where the faucet funds a fixed amount (Stellar friendbot)"),
    asset: str | None = typer.Option(None),
) -> None:
    """Test networks only: fund from the chain's faucet; prints what was funded."""
    body = ({"amount": amount} if amount else {}) | ({"asset": asset} if asset else {})
    _print(_call("POST", f"/v1/wallets/{wallet_id}/fund", json=body))


@wallets.command("trust")
def wallet_trust(
    wallet_id: str,
    asset: str = typer.Option(..., help="a credit asset configured on the wallet's chain"),
    idempotency_key: str | None = typer.Option(None, help="defaults to a new random key"),
) -> None:
    """Stellar: let the wallet hold a credit asset (its own change_trust; follow it with
    `custody withdrawals show <id>`)."""
    headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
    _print(_call("POST", f"/v1/wallets/{wallet_id}/trustlines", json={"asset": asset}, headers=headers))


# --- withdrawals -----------------------------------------------------------------------------
@withdrawals.command("create")
def withdrawal_create(
    wallet: str = typer.Option(..., help="wallet id"),
    to: str = typer.Option(..., help="destination address"),
    asset: str = typer.Option(...),
    amount: str = typer.Option(..., help="decimal, in the asset's unit"),
    idempotency_key: str | None = typer.Option(None, help="defaults to a new random key"),
) -> None:
    body = {"wallet_id": wallet, "to": to, "asset": asset, "amount": amount}
    _print(_call("POST", "/v1/withdrawals", json=body, headers={"Idempotency-Key": idempotency_key or uuid.uuid4().hex}))


@withdrawals.command("list")
def withdrawal_list(status: str | None = typer.Option(None), chain: str | None = typer.Option(None), limit: int = typer.Option(50)) -> None:
    params = {k: v for k, v in {"status": status, "chain": chain, "limit": limit}.items() if v}
    rows = _call("GET", "/v1/withdrawals", params=params)["items"]
    _table(rows, ["id", "chain", "asset", "amount", "status", "paused", "error_code", "tx_hash"])


@withdrawals.command("show")
def withdrawal_show(withdrawal_id: str) -> None:
    """Status, paused state, history and every signed attempt."""
    _print(_call("GET", f"/v1/withdrawals/{withdrawal_id}"))


FINAL_STATUSES = ("COMPLETED", "FAILED", "CANCELLED")


@withdrawals.command("wait")
def withdrawal_wait(
    withdrawal_id: str,
    until: list[str] = typer.Option(None, "--until", help="a status to wait for (repeatable); default: any final one"),
    timeout: float = typer.Option(120, help="seconds; exit code 2 when it passes"),
) -> None:
    """Wait until the withdrawal reaches a status, then print it (like `show`)."""
    wanted = {s.upper() for s in until} if until else set(FINAL_STATUSES)
    deadline = time.monotonic() + timeout
    while True:
        body = _call("GET", f"/v1/withdrawals/{withdrawal_id}")
        if body["status"] in wanted or body["status"] in FINAL_STATUSES:
            _print(body)
            return
        if time.monotonic() > deadline:
            typer.echo(f"error: still {body['status']} after {timeout:.0f} s", err=True)
            raise typer.Exit(2)
        time.sleep(0.5)


def _operate(action: str, withdrawal_id: str, reason: str) -> None:
    body = _call("POST", f"/v1/withdrawals/{withdrawal_id}/{action}", json={"reason": reason})
    typer.echo(f"{action}: {withdrawal_id} is {body['status']}" + (" (paused)" if body.get("paused") else ""))


@withdrawals.command("pause")
def withdrawal_pause(withdrawal_id: str, reason: ReasonOpt = "") -> None:
    """Hold before the next side-effecting step (never mid-step)."""
    _operate("pause", withdrawal_id, reason)


@withdrawals.command("resume")
def withdrawal_resume(withdrawal_id: str, reason: ReasonOpt = "") -> None:
    _operate("resume", withdrawal_id, reason)


@withdrawals.command("cancel")
def withdrawal_cancel(withdrawal_id: str, reason: ReasonOpt = "") -> None:
    """Before broadcast: CANCELLED. After broadcast on EVM: replaced in the same nonce."""
    _operate("cancel", withdrawal_id, reason)


@withdrawals.command("approve")
def withdrawal_approve(withdrawal_id: str, reason: ReasonOpt = "") -> None:
    """Four eyes: run with an operator's API key that is not the requester's."""
    _operate("approve", withdrawal_id, reason)


@withdrawals.command("reject")
def withdrawal_reject(withdrawal_id: str, reason: str = typer.Option(..., "--reason", help="why: required")) -> None:
    """Turn down a withdrawal awaiting approval: it ends CANCELLED (REJECTED), its hold released."""
    _operate("reject", withdrawal_id, reason)


@withdrawals.command("retry")
def withdrawal_retry(withdrawal_id: str) -> None:
    """Resubmit a FAILED withdrawal (a new linked withdrawal; the failed one stays FAILED)."""
    body = _call("POST", f"/v1/withdrawals/{withdrawal_id}/retry")
    typer.echo(f"retry: {withdrawal_id} resubmitted as {body['id']} ({body['status']})")


def _chain_action(action: str, chain: str, reason: str, task_queue: str | None) -> int:
    body = {"chain": chain, "reason": reason} | ({"task_queue": task_queue} if task_queue else {})
    return int(_call("POST", f"/v1/withdrawals/{action}", json=body, timeout=120)["count"])


@withdrawals.command("pause-all")
def withdrawal_pause_all(
    chain: str = typer.Option(...),
    reason: ReasonOpt = "",
    task_queue: str | None = typer.Option(None, help="only this task queue's workflows"),
) -> None:
    """Incident switch: pause every running withdrawal on one chain (operators; through the API,
    which records an operator's hold on each: their owners cannot lift it)."""
    count = _chain_action("pause-all", chain.lower(), reason, task_queue)
    typer.echo(f"paused {count} withdrawal(s) on {chain}")


@withdrawals.command("resume-all")
def withdrawal_resume_all(
    chain: str = typer.Option(...),
    reason: ReasonOpt = "",
    task_queue: str | None = typer.Option(None, help="only this task queue's workflows"),
) -> None:
    count = _chain_action("resume-all", chain.lower(), reason, task_queue)
    typer.echo(f"resumed {count} withdrawal(s) on {chain}")


@app.command("stats")
def stats(days: int = typer.Option(30)) -> None:
    """Counts and volumes by status and chain, time to COMPLETED, failure reasons (operators)."""
    body = _call("GET", "/v1/admin/stats", params={"days": days})
    _table(body["by_status"], ["chain", "asset", "status", "count", "volume"])
    typer.echo("")
    _table(body["by_day"], ["day", "chain", "count", "completed", "failed"])
    typer.echo(f"\ntime to COMPLETED: avg {body['seconds_to_completed_avg']} s, p95 {body['seconds_to_completed_p95']} s")
    if body["failure_reasons"]:
        typer.echo("")
        _table(body["failure_reasons"], ["error_code", "count"])


# --- reconciliation --------------------------------------------------------------------------
def _short(text: Any, keep: int = 10) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= keep + 1 else text[:keep] + "…"


def _print_reconciliation(report: dict[str, Any]) -> None:
    point = report["point"]
    where = f"at block {point['block_number']} ({_short(point['block_hash'], 12)})" if point else "at the latest state"
    typer.echo(f"reconciliation of {report['chain']} {where}: {report['status']}")
    typer.echo(f"report {report['id']}  run {report['run_key']}  {report['created_at']}")
    typer.echo("")
    rows = [{**r, "wallet": _short(r["wallet_id"], 8), "address": _short(r["address"], 10)} for r in report["rows"]]
    if rows:
        _table(
            rows,
            [
                "wallet",
                "label",
                "address",
                "asset",
                "on_chain",
                "deposits",
                "internal_in",
                "withdrawn",
                "fees",
                "side_costs",
                "in_flight_out",
                "expected",
                "drift",
                "status",
            ],
        )
    else:
        typer.echo("no wallet holds or moved anything on this chain")
    checks = report["summary"].get("checks", {})
    typer.echo("")
    typer.echo(
        "COMPLETED withdrawals re-verified: "
        + (", ".join(f"{state} {n}" for state, n in sorted(checks.items())) or "none yet")
        + f"; vanished: {len(report['vanished'])}"
    )
    for v in report["vanished"]:
        typer.echo(f"  withdrawal {v['withdrawal_id']} ({v['amount']} {v['asset']}) tx {v['tx_hash']}: {v['state']}: {v['detail']}")
    typer.echo(f"unexplained spends from custody keys: {len(report['unexplained'])}")
    for u in report["unexplained"]:
        if u.get("kind") == "NONCE":
            typer.echo(f"  {u['account']}: {u['count']} nonce(s) used on chain with no attempt of ours: {u['nonces']}")
        else:
            moved = ", ".join(f"{m['amount']} {m['asset']}" for m in u["moved"]) or "nothing"
            slot = f" sequence {u['sequence']}" if u.get("sequence") is not None else ""
            typer.echo(f"  tx {u['tx_hash']} from {u['account']}{slot}: moved {moved}, fee {u['fee']}")


@app.command("reconcile")
def reconcile(
    chain: str = typer.Option(..., help="a configured chain"),
    wait: float = typer.Option(120, help="seconds to wait for the run's report"),
    as_json: bool = typer.Option(False, "--json", help="the whole report as JSON"),
) -> None:
    """Reconcile one chain now (operators): each wallet's balance on chain against the
    database's view, COMPLETED withdrawals re-verified, spends no withdrawal explains."""
    deadline = time.monotonic() + wait
    first_wait = min(wait, 25)
    body = _call("POST", f"/v1/admin/reconciliation/{chain}/runs", params={"wait_seconds": first_wait}, timeout=first_wait + 30)
    report = body.get("report")
    while report is None:
        if time.monotonic() > deadline:
            typer.echo(f"error: reconciliation {body['workflow_id']} still running; read it later with the API", err=True)
            raise typer.Exit(2)
        time.sleep(1)
        try:
            with _api() as client:
                response = client.get(f"/v1/admin/reconciliation/{chain}", params={"run": body["workflow_id"]})
        except httpx.HTTPError:
            continue
        if response.status_code == 200:
            report = response.json()
    if as_json:
        _print(report)
    else:
        _print_reconciliation(report)


# --- chaos -----------------------------------------------------------------------------------
@app.command("chaos")
def chaos(
    withdrawals: int = typer.Option(200, "--withdrawals", "-n", min=1, help="withdrawals across the three chains"),
    seed: int = typer.Option(1, help="seed of every random choice: the withdrawals and the fault plan"),
    fault_window: float | None = typer.Option(None, help="seconds of faults (default: submissions + 20 s)"),
    submit_seconds: float | None = typer.Option(None, help="seconds the submissions are spread over (default: n / 5, at least 20)"),
    settle: float = typer.Option(150, help="seconds after the fault window within which everything must be final"),
    kms_share: float = typer.Option(0.0, min=0, max=1, help="share of wallets whose keys are in the AWS KMS devnet"),
    work_dir: str | None = typer.Option(None, help="keep the stack's files here (default: a temporary directory)"),
    keep: bool = typer.Option(False, help="keep the work directory (logs, databases) afterwards"),
    as_json: bool = typer.Option(False, "--json", help="print the whole report as JSON instead of the table"),
) -> None:
    """Start a stack of its own, run N withdrawals through worker, API, Temporal and PostgreSQL
    kills and restarts, wire faults and reorgs, then check exactly-once: exit 1 on any violation."""
    from pathlib import Path

    from chaos.config import ChaosConfig
    from chaos.report import render
    from chaos.run import run_chaos
    from devnet.termination import stop_like_ctrl_c_on_termination

    submit = submit_seconds if submit_seconds is not None else max(20.0, withdrawals / 5)
    config = ChaosConfig(
        withdrawals=withdrawals,
        seed=seed,
        submit_seconds=submit,
        fault_window_seconds=fault_window if fault_window is not None else submit + 20,
        settle_seconds=settle,
        kms_share=kms_share,
        work_dir=Path(work_dir) if work_dir else None,
        keep=keep or work_dir is not None,
    )
    stop_like_ctrl_c_on_termination()  # `timeout custody chaos ...` stops its stack too
    report = asyncio.run(run_chaos(config))
    typer.echo(json.dumps(report, indent=2, default=str) if as_json else render(report))
    raise typer.Exit(0 if report["ok"] else 1)


# --- audit log --------------------------------------------------------------------------------
@audit_cli.command("verify")
def audit_verify() -> None:
    """Walk the hash chain; exit 1 and name the first broken entry if any was edited or removed."""
    result = _call("GET", "/v1/audit/verify")
    if result["ok"]:
        typer.echo(f"audit log intact: {result['checked']} entries, every link holds")
        return
    typer.echo(
        f"audit log BROKEN at entry {result['first_broken_id']} (after {result['checked']} good entries): {result['reason']}",
        err=True,
    )
    raise typer.Exit(1)


@audit_cli.command("list")
def audit_list(
    object_id: str | None = typer.Option(None, "--object", help="e.g. a withdrawal id"),
    action: str | None = typer.Option(None, help="e.g. withdrawal.signed"),
    actor: str | None = typer.Option(None),
    limit: int = typer.Option(50),
) -> None:
    """Newest first."""
    params = {k: v for k, v in {"object_id": object_id, "action": action, "actor": actor, "limit": limit}.items() if v is not None}
    _table(_call("GET", "/v1/audit", params=params)["entries"], ["id", "at", "actor", "action", "object_id"])


# --- policy ----------------------------------------------------------------------------------
def _json_arg(text: str | None, file: str | None) -> Any:
    if (text is None) == (file is None):
        typer.echo("error: give exactly one of --json and --file", err=True)
        raise typer.Exit(2)
    try:
        return json.loads(text if text is not None else open(file or "").read())
    except (OSError, ValueError) as e:
        typer.echo(f"error: not readable JSON: {e}", err=True)
        raise typer.Exit(2) from e


def _compact(value: Any) -> Any:
    """Without nulls and empty lists or objects (what a rule leaves unsaid matches anything)."""
    if isinstance(value, dict):
        kept = {k: _compact(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, [], {})}
    return value


def _print_policy(body: dict[str, Any]) -> None:
    doc = body["document"]
    typer.echo(f"policy v{body['version']} by {body['author']} at {body['created_at']}: {body['summary']}")
    typer.echo(f"default action: {doc['default_action']}")
    listed = doc["allowlist_only"]
    if listed["owners"] or listed["wallets"]:
        typer.echo(f"allowlist-only: owners {listed['owners']}, wallets {listed['wallets']}")
    book = doc["address_book"]
    typer.echo(f"address book: cooling {book['cooling_seconds']} s, or approved by {json.dumps(_compact(book['quorum']))}")
    for name, members in doc["groups"].items():
        typer.echo(f"group {name}: {', '.join(members)}")
    typer.echo("")
    rows = []
    for position, rule in enumerate(doc["rules"]):
        match = _compact(rule["match"])
        if match.get("destination") == "ANY":
            del match["destination"]
        amount = match.get("amount", {})
        if "window_seconds" not in amount:  # per / counted say nothing without a window
            amount.pop("per", None), amount.pop("counted", None)
        action = rule["action"] + (f" {json.dumps(_compact(rule['quorum']))}" if rule.get("quorum") else "")
        extras = [f"max {rule['max_per_transaction']}/tx"] if rule.get("max_per_transaction") else []
        extras += [
            (
                f"{lim['per']} {lim['window_seconds']}s: {lim.get('max_amount') or ''} "
                f"{('x' + str(lim['max_count'])) if lim.get('max_count') else ''}"
            ).strip()
            for lim in rule["limits"]
        ]
        rows.append(
            {
                "#": position,
                "id": rule["id"],
                "name": rule["name"],
                "on": "yes" if rule["enabled"] else "no",
                "match": json.dumps(match),
                "action": action,
                "limits": "; ".join(extras),
            }
        )
    if rows:
        _table(rows, ["#", "id", "name", "on", "match", "action", "limits"])
    else:
        typer.echo("no rules (every withdrawal gets the default action; settings' thresholds still apply)")


@policy_cli.command("show")
def policy_show(version: int | None = typer.Option(None, help="a past version"), as_json: bool = typer.Option(False, "--json")) -> None:
    """The current policy (or a past version): rules in the order they are tried."""
    body = _call("GET", "/v1/policy" if version is None else f"/v1/policy/versions/{version}")
    if as_json:
        _print(body)
    else:
        _print_policy(body)


@policy_cli.command("versions")
def policy_versions(limit: int = typer.Option(20)) -> None:
    """Every change: version, author, time, summary."""
    _table(_call("GET", "/v1/policy/versions", params={"limit": limit})["items"], ["version", "author", "created_at", "summary"])


def _changed(body: dict[str, Any]) -> None:
    typer.echo(f"policy is now v{body['version']}: {body['summary']}")


@policy_cli.command("set")
def policy_set(
    file: str = typer.Option(..., help="a JSON policy document (rules, groups, allowlist_only, address_book, default_action)"),
    summary: str = typer.Option("", help="why (kept with the version)"),
    base_version: int | None = typer.Option(None, help="refuse if the policy moved past this version"),
) -> None:
    """Replace the whole policy with a document (a new version)."""
    document = _json_arg(None, file)
    _changed(_call("PUT", "/v1/policy", json={"document": document, "summary": summary, "base_version": base_version}))


@policy_cli.command("add-rule")
def policy_add_rule(
    rule_json: str | None = typer.Option(None, "--json", help='e.g. {"name": "...", "match": {...}, "action": "BLOCK"}'),
    file: str | None = typer.Option(None, help="the rule as a JSON file"),
    position: int | None = typer.Option(None, help="0 = tried first; default: last"),
    summary: str = typer.Option(""),
) -> None:
    """Add a rule (a new version); rules are tried in order and the first match decides."""
    body = {"rule": _json_arg(rule_json, file), "position": position, "summary": summary}
    _changed(_call("POST", "/v1/policy/rules", json=body))


@policy_cli.command("update-rule")
def policy_update_rule(
    rule_id: str,
    rule_json: str | None = typer.Option(None, "--json"),
    file: str | None = typer.Option(None),
    position: int | None = typer.Option(None, help="move it there"),
    summary: str = typer.Option(""),
) -> None:
    """Replace a rule (same id), optionally moving it."""
    _changed(_call("PUT", f"/v1/policy/rules/{rule_id}", json={"rule": _json_arg(rule_json, file), "position": position, "summary": summary}))


@policy_cli.command("remove-rule")
def policy_remove_rule(rule_id: str) -> None:
    """Remove a rule (a new version; withdrawals judged by it keep naming it and its version)."""
    _changed(_call("DELETE", f"/v1/policy/rules/{rule_id}"))


def _edit_document(change: Any, summary: str) -> None:
    """Read the current document, change it, publish it based on the version read (a
    concurrent change makes this fail with POLICY_VERSION_CONFLICT rather than be undone)."""
    current = _call("GET", "/v1/policy")
    document = current["document"]
    change(document)
    _changed(_call("PUT", "/v1/policy", json={"document": document, "summary": summary, "base_version": current["version"]}))


@policy_cli.command("group")
def policy_group(
    name: str,
    member: list[str] = typer.Option([], "--member", help="a user id; repeat (the group's members replace the old ones)"),
    remove: bool = typer.Option(False, "--remove", help="delete the group"),
) -> None:
    """Set (or delete) a named approver group, for quorums like 2 of group treasury."""

    def change(document: dict[str, Any]) -> None:
        if remove:
            document["groups"].pop(name, None)
        else:
            document["groups"][name] = member

    _edit_document(change, f"group {name} {'removed' if remove else 'set to ' + ', '.join(member)}")


@policy_cli.command("allowlist-only")
def policy_allowlist_only(
    wallet: list[str] = typer.Option([], "--wallet", help="a wallet id; repeat"),
    owner: list[str] = typer.Option([], "--owner", help="a user id (all their wallets); repeat"),
    off: bool = typer.Option(False, "--off", help="take them out of allowlist-only mode"),
) -> None:
    """Sources that may pay only usable entries of their owner's address book."""

    def change(document: dict[str, Any]) -> None:
        listed = document["allowlist_only"]
        for key, values in (("wallets", wallet), ("owners", owner)):
            current = [v for v in listed[key] if v not in values]
            listed[key] = current if off else current + list(values)

    _edit_document(change, f"allowlist-only {'off' if off else 'on'} for {', '.join([*wallet, *owner])}")


@policy_cli.command("test")
def policy_test(
    wallet: str = typer.Option(..., help="the source wallet id"),
    to: str = typer.Option(..., help="destination address"),
    asset: str = typer.Option(...),
    amount: str = typer.Option(..., help="decimal, in the asset's unit"),
    initiator: str | None = typer.Option(None, help="who asks (default: the wallet's owner)"),
    version: int | None = typer.Option(None, help="judge by a past version"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Dry run: which rule matches this hypothetical withdrawal, why, and what it would decide.
    Exit 1 when it would be refused (POLICY_BLOCKED, LIMIT_EXCEEDED)."""
    body = {"wallet_id": wallet, "to": to, "asset": asset, "amount": amount, "initiator": initiator, "version": version}
    result = _call("POST", "/v1/policy/test", json={k: v for k, v in body.items() if v is not None})
    if as_json:
        _print(result)
    else:
        facts = result["withdrawal"]
        typer.echo(
            f"{facts['amount']} {facts['asset']} from wallet {facts['wallet_id']} (owner {facts['owner']}) to {facts['destination']}, "
            f"initiated by {facts['initiator']} {facts['initiator_roles']}; destination {facts['address_book']}"
        )
        typer.echo(f"judged by policy v{result['version']}:")
        for step in result["trace"]:
            typer.echo(f"  {'MATCH' if step['matched'] else 'skip '}  {step['rule_id']:<28} {step['name']}: {step['why']}")
        code = f" ({result['error_code']})" if result["error_code"] not in (None, result["outcome"]) else ""
        typer.echo(f"=> {result['outcome']}{code}: {result['reason']}")
        if result["quorum"]:
            typer.echo(f"   quorum: {json.dumps(result['quorum'])}")
        for key, value in result["details"].items():
            typer.echo(f"   {key}: {value}")
    if result["error_code"]:
        raise typer.Exit(1)


# --- address book ------------------------------------------------------------------------------
ENTRY_COLUMNS = ["id", "owner", "chain", "address", "label", "usable", "status", "approvals"]


@addresses.command("list")
def address_list(owner: str | None = typer.Option(None, help="approvers: someone else's"), chain: str | None = typer.Option(None)) -> None:
    params = {k: v for k, v in {"owner": owner, "chain": chain}.items() if v}
    rows = _call("GET", "/v1/address-book", params=params)["items"]
    _table([{**r, "approvals": ",".join(r["approvals"])} for r in rows], ENTRY_COLUMNS)


@addresses.command("add")
def address_add(chain: str = typer.Option(...), address: str = typer.Option(...), label: str = typer.Option("")) -> None:
    """Add a trusted destination: usable after the cooling period, or once a quorum approves."""
    _print(_call("POST", "/v1/address-book", json={"chain": chain, "address": address, "label": label}))


@addresses.command("remove")
def address_remove(entry_id: str) -> None:
    body = _call("DELETE", f"/v1/address-book/{entry_id}")
    typer.echo(f"removed {body['address']} ({body['chain']}) from {body['owner']}'s address book")


@addresses.command("approve")
def address_approve(entry_id: str) -> None:
    """Approvers: one approval of the address-book quorum (the owner's own never counts)."""
    body = _call("POST", f"/v1/address-book/{entry_id}/approve")
    typer.echo(
        f"approved: {body['address']} now {'usable' if body['usable'] else 'not usable yet'} ({body['status']}); approvals {body['approvals']}"
    )


# --- key pools -------------------------------------------------------------------------------
@pools.command("show")
def pool_show(chain: str, as_json: bool = typer.Option(False, "--json", help="the whole answer as JSON")) -> None:
    """Keys by tier and state, balances, and the last rebalance's result."""
    body = _call("GET", f"/v1/pools/{chain}")
    if as_json:
        _print(body)
        return
    typer.echo(f"pool {body['chain']} ({body['asset']})")
    for tier in ("hodl", "bank", "explorer"):
        states = ", ".join(f"{s} {n}" for s, n in sorted(body["sizes"].get(tier, {}).items())) or "none"
        typer.echo(f"  {tier:<9} {states:<60} balance {body['balances'].get(tier, '0')}")
    live = [k for k in body["keys"] if k["state"] not in ("RECOVERED", "FAILED")]
    if live:
        typer.echo("")
        _table(live, ["label", "tier", "state", "address", "balance", "lease_id"])
    last = body.get("last_rebalance")
    typer.echo("")
    if last is None:
        typer.echo("last rebalance: none yet")
    else:
        typer.echo(f"last rebalance: {last['workflow_id']} {last['status']} at {last['finished_at'] or last['started_at']}")
        typer.echo(json.dumps(last["result"], indent=2, default=str))


def _started(what: str, body: dict[str, Any]) -> None:
    if body["mode"] == "schedule_triggered":
        typer.echo(f"{what}: triggered schedule {body['schedule_id']}")
    else:
        typer.echo(f"{what}: started {body['workflow_id']}")


@pools.command("rebalance")
def pool_rebalance(chain: str) -> None:
    """Rebalance now: trigger the schedule rebalance-<chain> (or start a run with a unique id)."""
    _started("rebalance", _call("POST", f"/v1/pools/{chain}/rebalance"))


# --- channel accounts ------------------------------------------------------------------------
@channels.command("show")
def channels_show(chain: str, as_json: bool = typer.Option(False, "--json", help="the whole answer as JSON")) -> None:
    """The channel set: state, lease holder and use count of each channel."""
    body = _call("GET", f"/v1/channels/{chain}")
    if as_json:
        _print(body)
        return
    sizes = ", ".join(f"{s} {n}" for s, n in sorted(body["sizes"].items())) or "none yet"
    typer.echo(f"channels of {body['chain']}: {body['configured']} configured; {sizes}")
    if body["channels"]:
        typer.echo("")
        _table(body["channels"], ["position", "state", "address", "leased_by", "lease_count"])


@channels.command("sync")
def channels_sync(chain: str) -> None:
    """Create, fund and top up the channel set now."""
    _started("channels", _call("POST", f"/v1/channels/{chain}/sync"))


@pools.command("lease")
def pool_lease(chain: str, idempotency_key: str | None = typer.Option(None)) -> None:
    """Lease one explorer key (single use; return it with `custody pools return`)."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    _print(_call("POST", f"/v1/pools/{chain}/explorers/lease", headers=headers))


@pools.command("return")
def pool_return(chain: str, lease_id: str) -> None:
    """Return a leased explorer key: it is retired and recovered by the next rebalance."""
    body = _call("POST", f"/v1/pools/{chain}/explorers/{lease_id}/return")
    typer.echo(f"return: lease {lease_id} is {body['state']}")


# --- access (admins) ---------------------------------------------------------------------------
KEY_COLUMNS = ["id", "prefix", "name", "owner", "scopes", "expires_at", "last_used_at", "revoked_at"]


def _bootstrap(work: Any) -> Any:
    """Run `work(session)` straight against PostgreSQL (CUSTODY_DATABASE_URL): for the first
    admin key, or to revoke keys when no admin key is at hand. Whoever can write the database
    is already trusted with everything; no API key is involved."""
    from core.settings import Settings
    from db.engine import create_engine, create_session_factory
    from db.migrate import upgrade

    async def run() -> Any:
        engine = create_engine(Settings().database_url, pool_size=1)
        try:
            await upgrade(engine)
            async with create_session_factory(engine)() as session, session.begin():
                return await work(session)
        finally:
            await engine.dispose()

    from core.errors import CustodyError

    try:
        return asyncio.run(run())
    except CustodyError as e:
        typer.echo(f"error: {e.code}: {e.message}", err=True)
        raise typer.Exit(1) from e


@apikeys.command("create")
def apikey_create(
    owner: str = typer.Option(..., help="the user the key acts as"),
    name: str = typer.Option(..., help="what the key is for"),
    role: list[str] = typer.Option([], "--role", help="set the owner's roles (creating the user): USER, APPROVER, OPERATOR, ADMIN"),
    scope: list[str] = typer.Option([], "--scope", help="narrow the key (default: every scope the owner's roles allow)"),
    ip: list[str] = typer.Option([], "--ip", help="allowed client network (CIDR); repeat; default: any"),
    expires_in_days: int | None = typer.Option(None, help="the key stops working after this many days"),
    bootstrap: bool = typer.Option(False, "--bootstrap", help="write to PostgreSQL directly (the first admin key)"),
) -> None:
    """Create an API key; it is printed once and stored only as its hash."""
    if bootstrap:
        from datetime import datetime, timedelta

        from db.access import create_api_key, upsert_user

        async def work(session: Any) -> Any:
            await upsert_user(session, owner, role or None)
            expires = None if expires_in_days is None else datetime.now(UTC) + timedelta(days=expires_in_days)
            row, key = await create_api_key(
                session, owner=owner, name=name, created_by="cli-bootstrap", scopes=scope or None, ip_allowlist=ip, expires_at=expires
            )
            return {"id": row.id, "prefix": row.prefix, "owner": row.owner, "scopes": row.scopes, "key": key}

        body = _bootstrap(work)
    else:
        if role:
            _call("PUT", f"/v1/admin/users/{owner}", json={"roles": role})
        request = {"owner": owner, "name": name, "ip_allowlist": ip} | ({"scopes": scope} if scope else {})
        if expires_in_days is not None:
            request["expires_in_days"] = expires_in_days
        body = _call("POST", "/v1/admin/api-keys", json=request)
    typer.echo(f"key {body['prefix']} (id {body['id']}) for {body['owner']}, scopes {', '.join(body['scopes'])}")
    typer.echo(body["key"])
    typer.echo("store it now: it is not shown again", err=True)


@apikeys.command("list")
def apikey_list(owner: str | None = typer.Option(None)) -> None:
    rows = _call("GET", "/v1/admin/api-keys", params={"owner": owner} if owner else {})["items"]
    _table([{**r, "scopes": ",".join(r["scopes"])} for r in rows], KEY_COLUMNS)


@apikeys.command("revoke")
def apikey_revoke(
    key_id: str,
    bootstrap: bool = typer.Option(False, "--bootstrap", help="write to PostgreSQL directly (no admin key needed)"),
) -> None:
    """Revoke a key at once (it answers 401 from then on)."""
    if bootstrap:
        from db.access import revoke_api_key

        async def work(session: Any) -> Any:
            row = await revoke_api_key(session, key_id, "cli-bootstrap")
            return None if row is None else row.prefix

        prefix = _bootstrap(work)
        if prefix is None:
            typer.echo(f"error: API_KEY_NOT_FOUND: no key {key_id}", err=True)
            raise typer.Exit(1)
    else:
        prefix = _call("POST", f"/v1/admin/api-keys/{key_id}/revoke")["prefix"]
    typer.echo(f"revoked {prefix} ({key_id})")


USER_COLUMNS = ["id", "roles", "status", "blocked_by", "blocked_reason", "created_at"]


@users.command("list")
def user_list() -> None:
    rows = _call("GET", "/v1/admin/users")["items"]
    _table([{**r, "roles": ",".join(r["roles"])} for r in rows], USER_COLUMNS)


@users.command("show")
def user_show(user_id: str) -> None:
    _print(_call("GET", f"/v1/admin/users/{user_id}"))


@users.command("set-roles")
def user_set_roles(user_id: str, role: list[str] = typer.Option(..., "--role")) -> None:
    """Create the user or replace its roles."""
    _print(_call("PUT", f"/v1/admin/users/{user_id}", json={"roles": role}))


@users.command("block")
def user_block(user_id: str, reason: ReasonOpt = "") -> None:
    """Nothing new from this user; their in-flight withdrawals stop before signing (USER_BLOCKED)."""
    body = _call("POST", f"/v1/admin/users/{user_id}/block", json={"reason": reason})
    typer.echo(f"block: {body['id']} is {body['status']}")


@users.command("unblock")
def user_unblock(user_id: str) -> None:
    body = _call("POST", f"/v1/admin/users/{user_id}/unblock")
    typer.echo(f"unblock: {body['id']} is {body['status']}")


@wallets.command("freeze")
def wallet_freeze(wallet_id: str, reason: ReasonOpt = "") -> None:
    """Admins: nothing is signed from the wallet until it is unfrozen (WALLET_FROZEN)."""
    body = _call("POST", f"/v1/admin/wallets/{wallet_id}/freeze", json={"reason": reason})
    typer.echo(f"freeze: {body['id']} frozen since {body['frozen_at']}")


@wallets.command("unfreeze")
def wallet_unfreeze(wallet_id: str) -> None:
    body = _call("POST", f"/v1/admin/wallets/{wallet_id}/unfreeze")
    typer.echo(f"unfreeze: {body['id']} is {body['status']}" + (" (frozen)" if body.get("frozen_at") else ""))


# --- webhooks ----------------------------------------------------------------------------------
WEBHOOK_COLUMNS = ["id", "url", "events", "status", "created_at"]
DELIVERY_COLUMNS = ["id", "event_type", "event_id", "state", "attempts", "last_status_code", "last_error", "created_at"]


@webhooks_cli.command("create")
def webhook_create(
    url: str = typer.Option(..., help="http(s) receiver"),
    event: list[str] = typer.Option(["*"], "--event", help="an event type (repeat), e.g. withdrawal.completed; default: all"),
    description: str = typer.Option(""),
    secret: str | None = typer.Option(None, help="your own signing secret (24+ printable characters); default: a random one"),
) -> None:
    """Register an endpoint; its signing secret is printed this once."""
    body: dict[str, Any] = {"url": url, "events": event, "description": description} | ({"secret": secret} if secret else {})
    created = _call("POST", "/v1/webhooks", json=body)
    typer.echo(f"webhook {created['id']} -> {created['url']} ({', '.join(created['events'])})")
    typer.echo(created["secret"])
    typer.echo("store the secret now: it is not shown again", err=True)


@webhooks_cli.command("list")
def webhook_list(include_deleted: bool = typer.Option(False, "--all", help="deleted endpoints too")) -> None:
    rows = _call("GET", "/v1/webhooks", params={"include_deleted": include_deleted})["items"]
    _table([{**r, "events": ",".join(r["events"])} for r in rows], WEBHOOK_COLUMNS)


@webhooks_cli.command("show")
def webhook_show(webhook_id: str) -> None:
    _print(_call("GET", f"/v1/webhooks/{webhook_id}"))


@webhooks_cli.command("delete")
def webhook_delete(webhook_id: str) -> None:
    """No new deliveries; the history stays readable."""
    body = _call("DELETE", f"/v1/webhooks/{webhook_id}")
    typer.echo(f"delete: webhook {body['id']} is {body['status']}")


@webhooks_cli.command("deliveries")
def webhook_deliveries(
    webhook_id: str,
    state: str | None = typer.Option(None, help="PENDING, DELIVERED or FAILED"),
    limit: int = typer.Option(50),
) -> None:
    """The endpoint's deliveries, newest first."""
    params = {"limit": limit} | ({"state": state.upper()} if state else {})
    _table(_call("GET", f"/v1/webhooks/{webhook_id}/deliveries", params=params)["items"], DELIVERY_COLUMNS)


@webhooks_cli.command("delivery")
def webhook_delivery(delivery_id: str) -> None:
    """One delivery: the event posted and every attempt (status code, latency, error)."""
    _print(_call("GET", f"/v1/webhooks/deliveries/{delivery_id}"))


@webhooks_cli.command("redeliver")
def webhook_redeliver(delivery_id: str) -> None:
    """Post the same event again (same event id) as a new delivery with its own retries."""
    body = _call("POST", f"/v1/webhooks/deliveries/{delivery_id}/redeliver")
    typer.echo(f"redeliver: {delivery_id} queued again as delivery {body['id']} ({body['state']})")


# --- processes -------------------------------------------------------------------------------
@app.command("worker")
def run_worker() -> None:
    """Run the Temporal worker (settings from CUSTODY_* variables)."""
    import worker

    asyncio.run(worker.main())


@app.command("api")
def run_api(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the HTTP API."""
    import uvicorn

    uvicorn.run("api.main:app_from_env", factory=True, host=host, port=port)


@app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def run_bench(ctx: typer.Context) -> None:
    """The throughput benchmark on a fresh local stack (`custody bench --help`; same as `python -m bench`)."""
    from bench.throughput import main as bench_main

    bench_main(list(ctx.args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
