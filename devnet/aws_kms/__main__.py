"""``python -m devnet.aws_kms --host 127.0.0.1 --port 5000``

Starts moto in server mode (all moto services, incl. KMS and Secrets Manager) with the
custody KMS extension and the ``/_custody/faults`` control endpoint. Prints one line
``CUSTODY_AWS_DEVNET_READY {"host": ..., "port": ..., "endpoint_url": ..., "pid": ...}``
on stdout once it accepts connections.
"""

from __future__ import annotations

import argparse
import os
import signal

from .server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devnet.aws_kms")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000, help="0 picks a free port")
    parser.add_argument(
        "--parent-watch",
        action="store_true",
        help="exit when stdin reaches EOF (used by the run_aws_kms launcher)",
    )
    args = parser.parse_args(argv)
    # Nothing to flush (all state is in memory): exit at once on SIGTERM.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    try:
        serve(args.host, args.port, parent_watch=args.parent_watch)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
