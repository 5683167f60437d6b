"""Bearer JWTs from the configured OpenID Connect issuer, verified with PyJWT against the
issuer's JWKS (fetched over HTTP, cached, refetched when a token names an unknown key id).

Checked: the signature (only the configured algorithms; never `none`), `iss`, `aud`, `exp`,
`nbf`, `iat` with a small leeway, and that `sub` is present. Roles come from a configured claim
and are mapped to custody's roles; unknown names are ignored.
"""

from __future__ import annotations

import asyncio
import hmac
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
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0

    async def aclose(self) -> None:
        await self._http.aclose()

    async def verify(self, token: str, *, audience: str | None = None, nonce: str | None = None) -> dict[str, Any]:
        """The token's claims once every check passed; Unauthorized (401) says which failed.
        `audience` (default: the configured one) and `nonce` are for the console's id_token."""
        claims = await self._decode(token, audience or self.settings.audience)
        # The nonce binds an id_token to the sign-in that asked for it: a replayed one is refused.
        if nonce is not None and not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
            raise Unauthorized("the id_token's nonce is not this sign-in's")
        return claims

    async def _decode(self, token: str, audience: str) -> dict[str, Any]:
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
                audience=audience,
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

    async def provider_metadata(self) -> dict[str, Any]:
        """The issuer's discovery document (the console's sign-in needs its authorization and
        token endpoints), cached like the keys; IdentityProviderUnavailable when it cannot be had."""
        if self._metadata is not None and time.monotonic() - self._metadata_at < self.settings.jwks_cache_seconds:
            return self._metadata
        try:
            response = await self._http.get(self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration")
            response.raise_for_status()
            metadata = response.json()
            for field in ("authorization_endpoint", "token_endpoint"):
                if not isinstance(metadata.get(field), str):
                    raise KeyError(field)
        except (httpx.HTTPError, ValueError, KeyError, AttributeError) as e:
            raise IdentityProviderUnavailable(f"the OIDC issuer's discovery document cannot be had: {type(e).__name__}") from e
        self._metadata, self._metadata_at = metadata, time.monotonic()
        return metadata

    async def exchange_code(self, code: str, code_verifier: str, redirect_uri: str) -> str:
        """The id_token the token endpoint gives for an authorization code and its PKCE verifier.
        A refusal (4xx) is Unauthorized with the issuer's own error name; the issuer unreachable or
        failing (5xx) is IdentityProviderUnavailable. Nothing here logs or quotes a token."""
        settings = self.settings
        assert settings.client_id is not None
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": settings.client_id,
            "code_verifier": code_verifier,
        }
        secret = settings.client_secret.get_secret_value() if settings.client_secret is not None else None
        auth = httpx.BasicAuth(settings.client_id, secret) if secret is not None else None
        endpoint = (await self.provider_metadata())["token_endpoint"]
        try:
            response = await self._http.post(endpoint, data=form, auth=auth, headers={"Accept": "application/json"})
        except httpx.HTTPError as e:
            raise IdentityProviderUnavailable(f"the OIDC issuer's token endpoint cannot be reached: {type(e).__name__}") from e
        if response.status_code >= 500:
            raise IdentityProviderUnavailable(f"the OIDC issuer's token endpoint failed (HTTP {response.status_code})")
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        if response.status_code >= 400:
            refusal = str(body.get("error", f"HTTP {response.status_code}"))[:100]
            raise Unauthorized(f"the issuer refused the sign-in code: {refusal}")
        id_token = body.get("id_token")
        if not isinstance(id_token, str) or not looks_like_jwt(id_token):
            raise Unauthorized("the issuer's answer has no id_token")
        return id_token
