"""Turn settings into signer backends.

`signer_from_settings` is the backend new wallets get (CUSTODY_SIGNER_BACKEND). A wallet keeps
the backend it was made with (`wallet.signer_backend`), so signing goes through `SignerSet`,
which builds any configured backend by name on first use, even after the default changed.
"""

from __future__ import annotations

from core.errors import SigningFailed
from core.settings import Settings
from db.engine import SessionFactory
from signers.base import Signer

BACKENDS = ("local", "aws-kms", "gcp-kms")


def signer_for_backend(name: str, settings: Settings, sessions: SessionFactory) -> Signer:
    if name == "local":
        from signers.kek import kek_from_settings
        from signers.local import LocalKeystoreSigner

        return LocalKeystoreSigner(sessions, kek_from_settings(settings))
    if name == "aws-kms":
        from signers.aws_kms import AwsKmsSigner

        return AwsKmsSigner(settings.aws_kms)
    if name == "gcp-kms":
        from signers.gcp_kms import GcpKmsSigner

        return GcpKmsSigner(settings.gcp_kms)
    raise ValueError(f"unknown signer backend {name!r}")


def signer_from_settings(settings: Settings, sessions: SessionFactory) -> Signer:
    """The configured default backend (for new wallets)."""
    return signer_for_backend(settings.signer_backend, settings, sessions)


class SignerSet:
    """Backend name -> signer, each built once, lazily. `default` is the one for new wallets."""

    def __init__(self, settings: Settings, sessions: SessionFactory) -> None:
        self._settings = settings
        self._sessions = sessions
        self._signers: dict[str, Signer] = {}

    @property
    def default(self) -> Signer:
        return self.get(self._settings.signer_backend)

    def get(self, backend: str) -> Signer:
        signer = self._signers.get(backend)
        if signer is None:
            if backend not in BACKENDS:  # a wallet row naming a backend this build does not know
                raise SigningFailed(f"unknown signer backend {backend!r}", backend=backend)
            signer = self._signers[backend] = signer_for_backend(backend, self._settings, self._sessions)
        return signer
