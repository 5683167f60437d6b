"""``python -m devnet.solana --host 127.0.0.1 --port 8899 [--ledger-slot-ms 400] [--state-dir DIR]``"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from .ledger import DEFAULT_FINALIZATION_DEPTH, DEFAULT_SLOT_MS
from .server import build_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devnet.solana", description="Solana JSON-RPC devnet on LiteSVM")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8899)
    parser.add_argument("--ledger-slot-ms", type=int, default=DEFAULT_SLOT_MS, help="slot period in ms; 0 = slots advance only manually")
    parser.add_argument("--finalization-depth", type=int, default=DEFAULT_FINALIZATION_DEPTH)
    parser.add_argument("--confirmation-depth", type=int, default=0)
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="keep the chain here and continue it at the next start (default: in memory only)",
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    app = build_app(
        slot_ms=args.ledger_slot_ms,
        finalization_depth=args.finalization_depth,
        confirmation_depth=args.confirmation_depth,
        state_dir=args.state_dir,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
