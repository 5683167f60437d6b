"""``python -m devnet.stellar --host 127.0.0.1 --port 8000 [--close-interval-ms 1000] [--state-dir DIR]``"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from .app import DEFAULT_FRIENDBOT_XLM, create_app
from .ledger import DEFAULT_BASE_FEE, DEFAULT_BASE_RESERVE, DEFAULT_NETWORK_PASSPHRASE, StellarLedger
from .persistence import LedgerStore


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devnet.stellar", description="Horizon-compatible Stellar devnet")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--close-interval-ms",
        type=int,
        default=1000,
        help="close a ledger every N ms; 0 = only on demand (a synchronous submit closes at once)",
    )
    parser.add_argument("--network-passphrase", default=DEFAULT_NETWORK_PASSPHRASE)
    parser.add_argument("--base-fee", type=int, default=DEFAULT_BASE_FEE, help="stroops per operation")
    parser.add_argument("--base-reserve", type=int, default=DEFAULT_BASE_RESERVE, help="stroops")
    parser.add_argument("--friendbot-xlm", type=int, default=DEFAULT_FRIENDBOT_XLM)
    parser.add_argument("--submission-timeout", type=float, default=30.0, help="seconds")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="keep the network here and continue it at the next start (default: in memory only)",
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    ledger = StellarLedger(
        args.network_passphrase,
        base_fee=args.base_fee,
        base_reserve=args.base_reserve,
        store=LedgerStore(args.state_dir) if args.state_dir is not None else None,
    )
    app = create_app(
        ledger,
        close_interval_ms=args.close_interval_ms,
        submission_timeout=args.submission_timeout,
        friendbot_xlm=args.friendbot_xlm,
    )
    print(
        f"stellar devnet: http://{args.host}:{args.port}  passphrase={ledger.network_passphrase!r}  root={ledger.root_keypair.public_key}",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
