"""A local OpenID Connect issuer for tests: discovery document and JWKS over HTTP, tokens signed
here (the access tests verify bearer tokens with it; the console's sign-in tests extend it with an
authorization and a token endpoint)."""

from __future__ import annotations

import time

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from devnet.local import free_port


class Issuer:
    """A local OpenID Connect issuer: discovery document and JWKS over HTTP, tokens signed here."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "k1"
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True) | {"kid": self.kid, "use": "sig", "alg": "RS256"}
        self.jwks_requests = 0

        async def discovery(_):  # type: ignore[no-untyped-def]
            return JSONResponse({"issuer": self.url, "jwks_uri": f"{self.url}/certs"})

        async def certs(_):  # type: ignore[no-untyped-def]
            self.jwks_requests += 1
            return JSONResponse({"keys": [jwk]})

        self.app = Starlette(routes=[Route("/.well-known/openid-configuration", discovery), Route("/certs", certs)])

    def token(self, sub: str, *, roles=("USER",), audience="custody", expires_in=300, key=None, kid=None) -> str:  # type: ignore[no-untyped-def]
        now = int(time.time())
        claims = {"iss": self.url, "sub": sub, "aud": audience, "iat": now, "exp": now + expires_in, "realm_access": {"roles": list(roles)}}
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": kid or self.kid})
