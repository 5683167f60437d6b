"""``python -m devnet.gcp_kms --host 127.0.0.1 --port 9010``

Serves the local Cloud KMS over insecure gRPC until SIGINT/SIGTERM. Prints
``CUSTODY_GCP_KMS_DEVNET_READY {"host": ..., "port": ..., "address": ...}`` on stdout
once it is listening (``--port 0`` picks a free port).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

from .server import READY_PREFIX, GcpKmsServer


async def _serve(host: str, port: int) -> None:
    srv = GcpKmsServer(host, port)
    await srv.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    info = {"host": srv.host, "port": srv.port, "address": srv.address, "pid": os.getpid()}
    sys.stdout.write(READY_PREFIX + json.dumps(info) + "\n")
    sys.stdout.flush()
    await stop.wait()
    await srv.stop(grace=1.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devnet.gcp_kms")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9010, help="0 picks a free port")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
