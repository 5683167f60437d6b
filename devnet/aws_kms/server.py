"""The AWS devnet HTTP server: moto (server mode) + KMS extension + fault middleware.

Run it in its own process (``python -m devnet.aws_kms``, or :func:`devnet.aws_kms.run_aws_kms`),
because :func:`build_app` patches moto's KMS classes process-wide.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from .faults import FaultInjector, FaultMiddleware
from .moto_ext import apply_patches

READY_PREFIX = "CUSTODY_AWS_DEVNET_READY "
PREWARM_SERVICES = ("kms", "secretsmanager")


def build_app(injector: FaultInjector | None = None) -> tuple[Callable[..., Any], FaultInjector]:
    """Patch moto's KMS backend and return the WSGI app (with its fault injector)."""
    apply_patches()
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    dispatcher = DomainDispatcherApplication(create_backend_app)
    # Create the Flask apps up front so the first request is not slow.
    for service in PREWARM_SERVICES:
        dispatcher.app_instances[service] = create_backend_app(service)  # type: ignore[arg-type]
    injector = injector or FaultInjector()
    return FaultMiddleware(dispatcher, injector), injector


def make_server(host: str = "127.0.0.1", port: int = 0) -> Any:
    """A threaded werkzeug server bound to (host, port); port 0 picks a free port."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server as wz_make_server

    app, _ = build_app()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    return wz_make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)


def _exit_when_parent_goes_away() -> None:
    """With --parent-watch the launcher keeps our stdin open; EOF means it died."""

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(1):
                pass
        finally:
            os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def serve(host: str, port: int, *, parent_watch: bool = False) -> None:
    server = make_server(host, port)
    bound_host, bound_port = server.server_address[:2]
    os.environ.setdefault("MOTO_PORT", str(bound_port))
    info = {"host": bound_host, "port": bound_port, "endpoint_url": f"http://{bound_host}:{bound_port}", "pid": os.getpid()}
    sys.stdout.write(READY_PREFIX + json.dumps(info) + "\n")
    sys.stdout.flush()
    # moto prints diagnostics on stdout; send everything after the ready line to stderr so
    # a launcher that stops reading our stdout pipe can never block us.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    if parent_watch:
        _exit_when_parent_goes_away()
    try:
        server.serve_forever()
    finally:
        server.server_close()
