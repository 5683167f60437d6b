"""Start/stop the AWS devnet server in a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .faults import CONTROL_PATH
from .server import READY_PREFIX

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass
class AwsKmsServer:
    """Handle to a running devnet (moto server + custody KMS extension)."""

    host: str
    port: int
    endpoint_url: str
    pid: int
    region: str = "us-east-1"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: str | None = None

    # ---------------------------------------------------------------- clients
    @property
    def client_kwargs(self) -> dict[str, Any]:
        """kwargs for ``boto3.client(service, **srv.client_kwargs)``."""
        return {"endpoint_url": self.endpoint_url, "region_name": self.region, **DUMMY_CREDENTIALS}

    def client(self, service: str = "kms", **kwargs: Any) -> Any:
        import boto3

        return boto3.client(service, **{**self.client_kwargs, **kwargs})

    # ---------------------------------------------------------------- control
    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.endpoint_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: HTTP {exc.code}: {exc.read().decode()}") from exc
        return json.loads(raw) if raw else None

    def set_faults(self, spec: dict[str, Any]) -> dict[str, Any]:
        """E.g. ``{"Sign": {"error": "ThrottlingException", "count": 2}}``; see faults.py."""
        return self._request("POST", CONTROL_PATH, spec)

    def faults(self) -> dict[str, Any]:
        """``{"rules": ..., "fired": {op: n}, "calls": {op: n}}``."""
        return self._request("GET", CONTROL_PATH)

    def clear_faults(self) -> None:
        self._request("DELETE", CONTROL_PATH)

    def reset(self) -> None:
        """Forget all moto state (keys, aliases, secrets) and all fault rules."""
        self._request("POST", "/moto-api/reset")
        self.clear_faults()


def _read_ready_line(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break  # child exited
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith(READY_PREFIX):
                    return json.loads(text[len(READY_PREFIX) :])
    raise RuntimeError("AWS devnet did not report ready")


@contextlib.contextmanager
def run_aws_kms(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    region: str = "us-east-1",
    startup_timeout: float = 20.0,
) -> Iterator[AwsKmsServer]:
    """Run moto server mode + the custody KMS extension in a subprocess.

    ``port=0`` binds a free port. Yields an :class:`AwsKmsServer`; ``srv.endpoint_url``
    is what boto3 needs. The subprocess exits when the block ends, and also on its own
    if this process dies (it watches its stdin).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("AWS_DEFAULT_REGION", region)
    log = tempfile.NamedTemporaryFile(prefix="aws-kms-devnet-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devnet.aws_kms", "--host", host, "--port", str(port), "--parent-watch"],
        cwd=str(PROJECT_ROOT),
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    try:
        try:
            info = _read_ready_line(proc, startup_timeout)
        except RuntimeError:
            proc.kill()
            proc.wait()
            log.flush()
            tail = Path(log.name).read_text(errors="replace")[-4000:]
            raise RuntimeError(f"AWS devnet failed to start (exit {proc.returncode}):\n{tail}") from None
        yield AwsKmsServer(
            host=info["host"],
            port=info["port"],
            endpoint_url=info["endpoint_url"],
            pid=info["pid"],
            region=region,
            process=proc,
            log_path=log.name,
        )
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        log.close()
        with contextlib.suppress(OSError):
            os.unlink(log.name)
