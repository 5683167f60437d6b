"""Turn settings into the configured signer backend."""

from __future__ import annotations

from core.settings import Settings
from db.engine import SessionFactory
from signers.base import Signer


def signer_from_settings(settings: Settings, sessions: SessionFactory) -> Signer:
    if settings.signer_backend == "local":
        from signers.local import LocalKeystoreSigner

        return LocalKeystoreSigner(sessions, settings.keystore_kek_bytes, settings.keystore_kek_id)
    raise ValueError(f"unknown signer backend {settings.signer_backend!r}")
