"""Bearer JWTs from the configured OpenID Connect issuer, verified with PyJWT against the
issuer's JWKS (fetched over HTTP, cached, refetched when a token names an unknown key id).

Checked: the signature (only the configured algorithms; never `none`), `iss`, `aud`, `exp`,
`nbf`, `iat` with a small leeway, and that `sub` is present. Roles come from a configured claim
and are mapped to custody's roles; unknown names are ignored.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt

from core.errors import TransientError, Unauthorized
from core.identity import Role, parse_roles
from core.settings import OidcSettings

JWKS_MIN_REFRESH_SECONDS = 30  # an unknown `kid` refetches the keys at most this often


class IdentityProviderUnavailable(TransientError):
    code = "IDENTITY_PROVIDER_UNAVAILABLE"
    http_status = 503


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


class OidcVerifier:
    def __init__(self, settings: OidcSettings, http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self._http = http or httpx.AsyncClient(timeout=10)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims once every check passed; Unauthorized (401) says which failed."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise Unauthorized("malformed bearer token") from e
        key = await self._key(header.get("kid"))
        try:
            return jwt.decode(
                token,
                key.key,
                algorithms=self.settings.algorithms,
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as e:
            raise Unauthorized("token expired") from e
        except jwt.InvalidAudienceError as e:
            raise Unauthorized("token is for another audience") from e
        except jwt.InvalidIssuerError as e:
            raise Unauthorized("token is from another issuer") from e
        except jwt.PyJWTError as e:
            raise Unauthorized(f"invalid token: {type(e).__name__}") from e

    def roles(self, claims: dict[str, Any]) -> frozenset[Role]:
        value: Any = claims
        for part in self.settings.roles_claim.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        names = value if isinstance(value, list) else []
        return parse_roles([self.settings.role_map.get(str(n), str(n)) for n in names])

    def user_id(self, claims: dict[str, Any]) -> str:
        value = claims.get(self.settings.user_id_claim)
        if not isinstance(value, str) or not value or len(value) > 200:
            raise Unauthorized(f"token has no usable {self.settings.user_id_claim!r} claim")
        return value

    async def _key(self, kid: str | None) -> jwt.PyJWK:
        stale = time.monotonic() - self._fetched_at > self.settings.jwks_cache_seconds
        if stale or (kid not in self._keys and time.monotonic() - self._fetched_at > JWKS_MIN_REFRESH_SECONDS):
            async with self._lock:
                if time.monotonic() - self._fetched_at > min(JWKS_MIN_REFRESH_SECONDS, self.settings.jwks_cache_seconds):
                    await self._refresh()
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        key = self._keys.get(kid or "")
        if key is None:
            raise Unauthorized("token signed with a key the issuer does not publish")
        return key

    async def _refresh(self) -> None:
        try:
            url = self.settings.jwks_url
            if url is None:
                discovery = await self._http.get(self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration")
                discovery.raise_for_status()
                url = discovery.json()["jwks_uri"]
            response = await self._http.get(url)
            response.raise_for_status()
            keyset = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, KeyError, jwt.PyJWTError) as e:
            if self._keys:  # keep serving with the keys we have; try again later
                self._fetched_at = time.monotonic()
                return
            raise IdentityProviderUnavailable(f"the OIDC issuer's keys cannot be fetched: {type(e).__name__}") from e
        self._keys = {k.key_id or "": k for k in keyset.keys}
        self._fetched_at = time.monotonic()
