"""One settings tree for every entry point (API, worker, CLI, dev stack).

Environment variables use the ``CUSTODY_`` prefix and ``__`` for nesting, e.g.
``CUSTODY_CHAINS__ANVIL__RPC_URL``. The development profile has safe defaults so that
``./dev up`` needs no editing; outside development, dev placeholders are refused.
"""

from __future__ import annotations

import base64
from functools import cached_property
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Discriminator, Field, SecretStr, Tag, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import UnknownAsset, UnknownChain

# Only for development and tests; refused when CUSTODY_ENVIRONMENT=production.
DEV_KEYSTORE_KEK = base64.b64encode(b"custody-dev-only-kek-not-secret!").decode()
DEV_PAYLOAD_KEY = base64.b64encode(b"custody-dev-only-payload-key-32b").decode()
DEV_INTENT_SEAL_KEY = base64.b64encode(b"custody-dev-only-intent-seal-key").decode()

GWEI = 10**9


class TokenSettings(BaseModel):
    """An ERC-20 token the chain accepts withdrawals of."""

    address: str
    decimals: int = Field(ge=0, le=36)


class AssetSpec(BaseModel):
    """What the inside of custody needs to know about an asset (chain-neutral)."""

    symbol: str
    decimals: int
    contract: str | None = None  # None: the chain's native asset

    @property
    def is_native(self) -> bool:
        return self.contract is None


class FailoverSettings(BaseModel):
    """How a chain with several endpoints (`rpc_urls` / `horizon_urls`) moves between them."""

    # Consecutive connectivity failures (refused, reset, timeout, 5xx, 429) that open an
    # endpoint's circuit breaker; transaction errors never count.
    failure_threshold: int = Field(default=3, ge=1)
    # An open endpoint gets no traffic for this long, then one trial request (half-open).
    cooldown_seconds: float = Field(default=30.0, gt=0)
    # A read (balance, nonce, status...) slower than this counts as a failure and moves on to the
    # next endpoint (client libraries' own timeouts and retries can add up to a minute or more).
    # Signing, broadcasts and faucets keep the adapters' own timeouts.
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    # A broadcast goes to every healthy endpoint; once one accepted, the others get this long.
    broadcast_grace_seconds: float = Field(default=2.0, ge=0)


def _endpoint_list(single: str, several: list[str], single_name: str, several_name: str) -> list[str]:
    """The endpoints in order of preference; the single-URL field is the first of the list."""
    if any(not isinstance(u, str) or not urlsplit(u).scheme or not urlsplit(u).netloc for u in several):
        # Never echo the URL: it may carry an API key.
        raise ValueError(f"every {several_name} entry must be an absolute URL")
    if several:
        if single and single != several[0]:
            raise ValueError(f"give {single_name} or {several_name} (whose first entry it is), not two different ones")
        return list(several)
    if not single:
        raise ValueError(f"{single_name} (or {several_name}) is required")
    return [single]


class ChainSettingsBase(BaseModel):
    """What every chain family configures; activities read only these fields."""

    model_config = ConfigDict(hide_input_in_errors=True)  # endpoint URLs may carry API keys

    native_symbol: str
    # Unconfirmed this long: EVM replaces inside the nonce; others re-check expiry.
    fee_bump_after_seconds: float = Field(default=60.0, gt=0)
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    # After the first send, the send step asks the node for the transfer's final outcome for up
    # to this long (at most fee_bump_after_seconds, and never into the last 5 s of the step's
    # 30 s timeout; 0: not at all): a transfer final by then (a chain or devnet whose blocks are
    # final within it) is concluded without a confirmation activity and the workflow task
    # around it. Otherwise await_confirmation waits as before; the wait only moves the first
    # polls into the send step. Left unset, 0 where finality lags by design (see
    # `_finality_look_only_where_it_can_see_finality`).
    finality_wait_in_send_step_seconds: float = Field(default=2.0, ge=0, le=30)
    # Test networks only: the fund route may draw from the network's faucet.
    faucet_enabled: bool = False
    # Non-native assets by the symbol custody uses. `address` is the ERC-20 contract, the SPL
    # mint, or "CODE:ISSUER" on Stellar.
    tokens: dict[str, TokenSettings] = Field(default_factory=dict)
    # Only used with more than one endpoint (rpc_urls / horizon_urls): see chains/failover.py.
    failover: FailoverSettings = Field(default_factory=FailoverSettings)
    # The console links each attempt's transaction here, `{hash}` replaced by its hash
    # (e.g. "https://polygonscan.com/tx/{hash}"); empty: no links.
    explorer_tx_url: str = ""

    @field_validator("explorer_tx_url")
    @classmethod
    def _explorer_template(cls, value: str) -> str:
        if value and (urlsplit(value).scheme not in ("http", "https") or "{hash}" not in value):
            raise ValueError("explorer_tx_url is an http(s) URL with {hash} where the transaction hash goes")
        return value

    def _finality_lags(self) -> bool:
        """Whether this chain's configured finality trails the block by more than a send step's
        look could wait (a family's finalized checkpoint or commitment)."""
        return False

    @model_validator(mode="after")
    def _finality_look_only_where_it_can_see_finality(self) -> ChainSettingsBase:
        # A finalized checkpoint trails the head by minutes on real chains (by two blocks on
        # ./dev up's anvil, Solana's finalized by 32 slots): a look in the send step would never
        # see the transfer final, only hold the step and poll the node. An explicit value stands.
        if "finality_wait_in_send_step_seconds" not in self.model_fields_set and self._finality_lags():
            self.finality_wait_in_send_step_seconds = 0.0
        return self

    def explorer_tx_link(self, tx_hash: str | None) -> str | None:
        """The explorer's page of a transaction, or None without a template (or a hash)."""
        if not self.explorer_tx_url or not tx_hash:
            return None
        return self.explorer_tx_url.replace("{hash}", quote(tx_hash, safe=""))

    @property
    def native_decimals(self) -> int:
        raise NotImplementedError

    def endpoint_urls(self) -> list[str]:
        """The chain's node endpoints, in order of preference."""
        raise NotImplementedError

    def for_endpoint(self, url: str) -> ChainSettingsBase:
        """These settings with `url` as the one endpoint (one adapter per endpoint)."""
        raise NotImplementedError

    def asset(self, symbol: str) -> AssetSpec:
        if symbol == self.native_symbol:
            return AssetSpec(symbol=symbol, decimals=self.native_decimals)
        token = self.tokens.get(symbol)
        if token is None:
            raise UnknownAsset(f"asset {symbol!r} is not configured on this chain", asset=symbol)
        return AssetSpec(symbol=symbol, decimals=token.decimals, contract=token.address)

    def assets(self) -> list[AssetSpec]:
        return [self.asset(self.native_symbol)] + [self.asset(s) for s in sorted(self.tokens)]


class EvmChainSettings(ChainSettingsBase):
    family: Literal["evm"] = "evm"
    chain_id: int
    rpc_url: str = ""  # one endpoint; with several, rpc_urls (then rpc_url is its first entry)
    rpc_urls: list[str] = Field(default_factory=list)
    native_symbol: str = "ETH"
    # COMPLETED means final. "finalized": at or below the node's `finalized` block (Polygon PoS
    # milestones, Ethereum's finalized checkpoint); "depth": `confirmations` blocks deep, the block
    # hash re-checked (reorgs); "auto": the finalized tag where the node has one, else depth.
    finality: Literal["auto", "finalized", "depth"] = "auto"
    confirmations: int = Field(default=12, ge=1)
    # EIP-1559 fees: tip = percentile of recent tips (from eth_feeHistory), at least the floor;
    # maxFee = 2 x base fee + tip, never above the cap. Polygon's tip floor is 25 gwei.
    fee_history_blocks: int = Field(default=10, ge=1, le=1024)
    fee_percentile: int = Field(default=50, ge=1, le=99)
    min_priority_fee_wei: int = Field(default=1 * GWEI, ge=0)
    max_fee_per_gas_cap_wei: int = Field(default=500 * GWEI, gt=0)
    fee_bump_percent: int = Field(default=15, ge=10)
    faucet_max_wei: int = 10 * 10**18

    @model_validator(mode="after")
    def _endpoints(self) -> EvmChainSettings:
        self.rpc_url = _endpoint_list(self.rpc_url, self.rpc_urls, "rpc_url", "rpc_urls")[0]
        return self

    def _finality_lags(self) -> bool:
        return self.finality != "depth"  # "auto" is the finalized block on any node that has one

    def endpoint_urls(self) -> list[str]:
        return list(self.rpc_urls) or [self.rpc_url]

    def for_endpoint(self, url: str) -> EvmChainSettings:
        return self.model_copy(update={"rpc_url": url, "rpc_urls": []})

    @property
    def native_decimals(self) -> int:
        return 18


class ChannelSettings(BaseModel):
    """Stellar channel accounts: system accounts that are a transaction's source (its sequence
    number and fee) while the wallet stays the payment's source, so one wallet can have many
    payments in flight (stellar-core admits one transaction per source account at a time)."""

    count: int = Field(default=0, ge=0, le=1000)  # 0: every wallet is its own transaction source
    # XLM each channel is created with: its 1 XLM minimum balance plus the fees it will pay.
    starting_balance: str = "5"
    # Below this spendable XLM a channel is set aside (UNDERFUNDED) until it is topped up.
    min_balance: str = "0.5"
    # The custody wallet that creates and tops up the channels; None: the network's friendbot
    # (test networks with faucet_enabled).
    funding_wallet_id: str | None = None
    # How often ChannelAccountsWorkflow re-checks the set (creates, funds, tops up).
    check_interval_seconds: int = Field(default=300, gt=0)


class StellarChainSettings(ChainSettingsBase):
    family: Literal["stellar"] = "stellar"
    horizon_url: str = ""  # one endpoint; with several, horizon_urls (then horizon_url is its first entry)
    horizon_urls: list[str] = Field(default_factory=list)
    network_passphrase: str
    native_symbol: str = "XLM"
    base_fee_cap_stroops: int = Field(default=10_000, gt=0)
    timebounds_seconds: int = Field(default=300, gt=0)
    friendbot_url: str | None = None
    channels: ChannelSettings = Field(default_factory=ChannelSettings)
    # Test networks only: the secret seed (S...) of the configured credit assets' issuer, so
    # `fund` can pay them to a wallet that trusts them. None: credit assets cannot be funded.
    faucet_token_authority: SecretStr | None = None

    @model_validator(mode="after")
    def _endpoints(self) -> StellarChainSettings:
        self.horizon_url = _endpoint_list(self.horizon_url, self.horizon_urls, "horizon_url", "horizon_urls")[0]
        return self

    def endpoint_urls(self) -> list[str]:
        return list(self.horizon_urls) or [self.horizon_url]

    def for_endpoint(self, url: str) -> StellarChainSettings:
        return self.model_copy(update={"horizon_url": url, "horizon_urls": []})

    @property
    def native_decimals(self) -> int:
        return 7


class SolanaChainSettings(ChainSettingsBase):
    family: Literal["solana"] = "solana"
    rpc_url: str = ""  # one endpoint; with several, rpc_urls (then rpc_url is its first entry)
    rpc_urls: list[str] = Field(default_factory=list)
    native_symbol: str = "SOL"
    # COMPLETED at this commitment: "finalized" (rooted, cannot be rolled back) by default.
    commitment: Literal["confirmed", "finalized"] = "finalized"
    compute_unit_price_micro_lamports: int = Field(default=0, ge=0)
    compute_unit_limit: int = Field(default=200_000, gt=0)
    # Off-curve (program-derived) destinations usually strand SOL; allow them only on purpose
    # (e.g. paying a program vault). Token withdrawals always need an on-curve owner.
    allow_off_curve_sol_destinations: bool = False
    fee_bump_after_seconds: float = Field(default=2.0, gt=0)
    # Test networks only: the mint authority of the configured test tokens (base58 of its 64-byte
    # keypair), so `fund` can mint them. None: tokens cannot be funded.
    faucet_token_authority: SecretStr | None = None

    @model_validator(mode="after")
    def _endpoints(self) -> SolanaChainSettings:
        self.rpc_url = _endpoint_list(self.rpc_url, self.rpc_urls, "rpc_url", "rpc_urls")[0]
        return self

    def _finality_lags(self) -> bool:
        return self.commitment == "finalized"

    def endpoint_urls(self) -> list[str]:
        return list(self.rpc_urls) or [self.rpc_url]

    def for_endpoint(self, url: str) -> SolanaChainSettings:
        return self.model_copy(update={"rpc_url": url, "rpc_urls": []})

    @property
    def native_decimals(self) -> int:
        return 9


class PoolSettings(BaseModel):
    """Tiered keys of one chain (seed 004): HODL (cold) funds Bank keys, which fund single-use
    Explorer keys. Amounts are decimal strings in the native asset's unit."""

    min_available_explorers: int = Field(default=5, ge=0)
    explorers_to_create: int = Field(default=3, ge=1)
    explorer_target_balance: str = "0.01"
    bank_count: int = Field(default=1, ge=1)
    bank_target_balance: str = "0.1"
    # HODL movements above this need an operator's approval (four eyes); at or below, automatic.
    hodl_auto_approve_up_to: str = "0"
    hodl_signer_backend: Literal["local", "aws-kms", "gcp-kms"] | None = None  # None: signer_backend
    lease_seconds: int = Field(default=900, gt=0)
    rebalance_interval_seconds: int = Field(default=300, gt=0)


class ReconciliationSettings(BaseModel):
    """ReconciliationWorkflow (schedule `reconcile-<chain>`): every chain's wallets, on chain
    against the database's view; COMPLETED withdrawals re-verified; spends from our keys that no
    withdrawal explains listed."""

    interval_seconds: int = Field(default=600, gt=0)
    # EVM chains with depth finality: a COMPLETED withdrawal is re-verified until its block is
    # this deep (with `finality: finalized`, until the finalized block passes it).
    reorg_depth_blocks: int = Field(default=64, ge=1)


class WebhookSettings(BaseModel):
    """Owners' webhook endpoints (README, Webhooks): each withdrawal status change is posted,
    signed, by a WebhookDeliveryWorkflow that retries with exponential backoff (first_retry,
    doubling, at most max_retry_interval) until retry_period after the event, then FAILED."""

    # The worker runs the dispatcher (webhook-dispatcher-<task queue>) that turns outbox rows
    # into deliveries; off: events wait in the outbox.
    enabled: bool = True
    retry_period_seconds: float = Field(default=86_400, gt=0)
    first_retry_seconds: float = Field(default=10, gt=0)
    max_retry_interval_seconds: float = Field(default=3_600, gt=0)
    request_timeout_seconds: float = Field(default=10, gt=0, le=120)
    # How often the dispatcher looks at the outbox, and how long one of its rounds (an activity,
    # heartbeating) waits for work before it returns.
    poll_interval_seconds: float = Field(default=0.5, gt=0)
    idle_round_seconds: float = Field(default=60, gt=0, le=300)
    # Loopback and private receivers (dev and tests post to 127.0.0.1). None: allowed except in
    # production. Link-local and cloud metadata addresses are refused whatever this says.
    allow_local_receivers: bool | None = None
    max_endpoints_per_owner: int = Field(default=25, ge=1)
    # Dispatched outbox rows are deleted after this long (deliveries keep the bodies).
    outbox_retention_days: float = Field(default=7, gt=0)


def _decoded(text: str) -> bytes | None:
    """The bytes a base64 setting stands for (whitespace and line breaks ignored); None if it
    is not base64 at all."""
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except ValueError:
        return None


def _family(value: object) -> str:
    if isinstance(value, dict):
        return str(value.get("family", "evm"))
    return str(getattr(value, "family", "evm"))


# "family" picks the section; EVM is the default so existing EVM configurations need not say it.
ChainSettings = Annotated[
    Annotated[EvmChainSettings, Tag("evm")] | Annotated[StellarChainSettings, Tag("stellar")] | Annotated[SolanaChainSettings, Tag("solana")],
    Discriminator(_family),
]


class AwsKmsSettings(BaseModel):
    """AWS KMS signer: keys created per wallet, aliased alias/<alias_prefix>/<key id>."""

    region: str = "us-east-1"
    endpoint_url: str | None = None  # None: the real AWS endpoint; set for moto/local
    alias_prefix: str = "custody-development"


class GcpKmsSettings(BaseModel):
    """Google Cloud KMS signer: keys in projects/<project>/locations/<location>/keyRings/<key_ring>."""

    project: str = "custody-local"
    location: str = "global"
    key_ring: str = "custody-development"
    protection_level: Literal["HSM", "SOFTWARE"] = "HSM"
    endpoint: str | None = None  # host:port of a local gRPC server (insecure); None: Google's


class OidcSettings(BaseModel):
    """Bearer JWTs from an OpenID Connect issuer (Keycloak, Auth0, Entra ID...), verified against
    the issuer's JWKS: signature, `iss`, `aud`, `exp` (and `nbf`), with a small leeway."""

    issuer: str
    audience: str
    # Where the signing keys are; unset: `jwks_uri` of {issuer}/.well-known/openid-configuration.
    jwks_url: str | None = None
    # Dotted path to the list of role names in the token (Keycloak: realm_access.roles).
    roles_claim: str = "realm_access.roles"
    # Role names in the token -> custody roles; names not listed map to themselves
    # case-insensitively (USER, APPROVER, OPERATOR, ADMIN), anything else is ignored.
    role_map: dict[str, str] = Field(default_factory=dict)
    # The claim whose value is the custody user id (the owner of wallets, `by` of actions).
    user_id_claim: str = "sub"
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    jwks_cache_seconds: int = Field(default=300, gt=0)
    # Console sign-in ("Sign in with <issuer>": authorization code + PKCE). Unset: the console
    # takes API keys only. The id_token's audience is this client id.
    client_id: str | None = None
    # Only for a confidential client (sent with HTTP Basic to the token endpoint); never logged.
    client_secret: SecretStr | None = None
    # Registered at the issuer; unset: {the request's base URL}console/login/oidc/callback.
    redirect_url: str | None = None
    # The button's name ("Sign in with <display_name>"); unset: the issuer's host.
    display_name: str | None = None


class RateLimitSettings(BaseModel):
    """Token buckets in Redis ("N/second|minute|hour|day": N requests per period, bursting up to
    N). Per identity and per client IP on every request; stricter buckets for wallet creation
    (each KMS key costs money) and failed authentication (per IP; when spent, that IP is refused
    before its credentials are even checked). Redis down: reads go through, writes fail closed
    (503 RATE_LIMITER_UNAVAILABLE)."""

    enabled: bool = True
    per_identity: str = "600/minute"
    per_ip: str = "1200/minute"
    wallet_creation: str = "20/hour"
    failed_auth: str = "20/minute"


class HttpEdgeSettings(BaseModel):
    """Limits applied to every request before any parsing (api/edge.py)."""

    max_body_bytes: int = Field(default=1_048_576, gt=0)
    # `[[[[...` or `{"a":{"a":...` deeper than this is refused before json.loads sees it: web3's
    # py_ecc raises the recursion limit to 100,000 at import, so the C JSON decoder would
    # overflow the C stack (a segfault) on a deep enough body instead of raising RecursionError.
    max_json_depth: int = Field(default=32, ge=2, le=1000)


class TemporalTlsSettings(BaseModel):
    """TLS to the Temporal frontend (Temporal Cloud, or a self-hosted cluster with TLS/mTLS).
    Paths to PEM files; a client certificate and key together enable mTLS."""

    server_root_ca_cert_path: str | None = None  # None: the system's roots
    client_cert_path: str | None = None
    client_private_key_path: str | None = None
    domain: str | None = None  # server name to verify, when it differs from the address host


def _default_chains() -> dict[str, ChainSettings]:
    return {
        "anvil": EvmChainSettings(
            chain_id=31337,
            rpc_url="http://127.0.0.1:8545",
            native_symbol="ETH",
            faucet_enabled=True,
            fee_bump_after_seconds=20,
        )
    }


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CUSTODY_",
        env_nested_delimiter="__",
        extra="ignore",
        env_file=None,
        hide_input_in_errors=True,  # a rejected setting may be a secret: never echo it
    )

    environment: Literal["development", "test", "production"] = "development"
    log_level: str = "INFO"
    log_json: bool = True

    database_url: str = "postgresql+asyncpg://postgres@/postgres?host=.data/postgres"
    redis_url: str = "redis://127.0.0.1:6379/0"

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "custody"
    temporal_ui_url: str = "http://127.0.0.1:8233"

    # TLS (and mTLS) to the Temporal frontend, and Temporal Cloud's API-key auth.
    temporal_tls: TemporalTlsSettings | None = None
    temporal_api_key: SecretStr | None = None

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Callers authenticate with API keys kept (hashed) in PostgreSQL (`custody apikeys create`),
    # or with bearer JWTs from this OIDC issuer (None: API keys only).
    oidc: OidcSettings | None = None
    # Chains on which every user gets a wallet labelled "default" on their first
    # `GET /v1/users/me` (invisible wallets: made before the user asks).
    default_wallet_chains: list[str] = Field(default_factory=list)
    rate_limits: RateLimitSettings = Field(default_factory=lambda: RateLimitSettings())
    http: HttpEdgeSettings = Field(default_factory=lambda: HttpEdgeSettings())
    # Prometheus /metrics of the API on 127.0.0.1:<port> without authentication (0 = off; on the
    # public port /metrics and /health need the `operations` scope).
    api_metrics_port: int = 0
    worker_metrics_port: int = 9464
    # Temporal SDK metrics (task latencies, poller and slot usage) in Prometheus form; 0 = off.
    temporal_metrics_port: int = 9465
    # Budget for activity starts across all workers of the task queue (protects KMS and RPC
    # quotas: excess work waits in Temporal instead of failing). 0 = unlimited.
    activities_per_second: float = Field(default=0, ge=0)
    faucet_daily_limit: int = Field(default=3, ge=0)
    # OpenTelemetry traces (API request -> workflow -> activities) to the OTLP endpoint of the
    # standard OTEL_EXPORTER_OTLP_* variables; off by default (core/tracing.py).
    tracing: bool = False
    # Four-eyes approval above a per-asset amount: {"anvil:ETH": "5"} (decimal, in the asset's unit).
    approval_thresholds: dict[str, str] = Field(default_factory=dict)
    # The threshold counts what the wallet sent without approval in this rolling window (so a
    # split withdrawal does not slip under it); 0: each withdrawal alone.
    approval_threshold_window_seconds: int = Field(default=86_400, ge=0)
    approval_timeout_seconds: int = Field(default=86_400, gt=0)
    # Confirmation rounds (one bump delay each) a withdrawal's run makes before it continues as
    # new, keeping each run's history bounded however long a transaction waits.
    confirmation_rounds_per_run: int = Field(default=100, ge=1)
    # An activity failing with an error custody did not foresee is retried (a fix deployed lets
    # it pass) and alerted (ACTIVITY_STUCK on its withdrawal) after this many attempts.
    unexpected_error_alert_after_attempts: int = Field(default=5, ge=1)
    # On SIGTERM the worker stops polling and gives activities in flight this long to finish.
    worker_shutdown_grace_seconds: float = Field(default=30, ge=0)
    # Key pools per chain name, e.g. {"anvil": {"min_available_explorers": 5}}; empty: no pools.
    pools: dict[str, PoolSettings] = Field(default_factory=dict)
    reconciliation: ReconciliationSettings = Field(default_factory=lambda: ReconciliationSettings())
    webhooks: WebhookSettings = Field(default_factory=lambda: WebhookSettings())

    # Local keystore key-encryption key, one of: base64 of 32 random bytes (AES-256-GCM, held
    # in memory); "aws-kms:<key id, alias/name or ARN>" (a SYMMETRIC_DEFAULT key: data keys are
    # wrapped with KMS Encrypt/Decrypt); "gcp-kms:projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>"
    # (an ENCRYPT_DECRYPT key). With a KMS KEK no key-encryption key is ever in a file.
    keystore_kek: SecretStr = SecretStr(DEV_KEYSTORE_KEK)
    keystore_kek_id: str = "local-kek-1"
    signer_backend: Literal["local", "aws-kms", "gcp-kms"] = "local"
    aws_kms: AwsKmsSettings = Field(default_factory=lambda: AwsKmsSettings())
    gcp_kms: GcpKmsSettings = Field(default_factory=lambda: GcpKmsSettings())

    chains: dict[str, ChainSettings] = Field(default_factory=_default_chains)

    # Temporal payload encryption (AES-256-GCM): key id -> base64 of 32 bytes, and the id new
    # payloads use. Rotate by adding a key and switching payload_key_id; keep old keys to read.
    payload_keys: dict[str, SecretStr] = Field(default_factory=lambda: {"dev-1": SecretStr(DEV_PAYLOAD_KEY)})
    payload_key_id: str = "dev-1"
    # Key of the HMAC that seals each withdrawal's requested intent (base64, 32 bytes); the signing
    # guard refuses to sign for a row whose seal does not hold. Keep it in a secret store.
    intent_seal_key: SecretStr = SecretStr(DEV_INTENT_SEAL_KEY)
    # Bearer token the Temporal UI must send to /codec/*; empty: no token (development only).
    codec_auth_token: SecretStr = SecretStr("")

    # Fault injection for crash tests: the worker process exits right after this activity
    # completes (before Temporal hears of it). Refused in production.
    chaos_exit_after_activity: str | None = None

    @field_validator("keystore_kek")
    @classmethod
    def _keystore_kek_form(cls, value: SecretStr) -> SecretStr:
        """Accept the three KEK forms (see the field); say which one is malformed and how."""
        import re

        text = value.get_secret_value().strip()
        kind, _, ref = text.partition(":")
        if kind == "aws-kms":
            key_id = r"(?:mrk-[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
            alias = r"alias/[a-zA-Z0-9/_-]{1,250}"
            arn = rf"arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{{12}}:(?:key/{key_id}|{alias})"
            if not re.fullmatch(rf"{arn}|{key_id}|{alias}", ref, flags=re.IGNORECASE):
                raise ValueError(
                    f"CUSTODY_KEYSTORE_KEK=aws-kms:<key> must name a symmetric AWS KMS key by key id, alias/<name>, key ARN or alias ARN; got {ref!r}"
                )
        elif kind == "gcp-kms":
            crypto_key = r"projects/[^/]+/locations/[^/]+/keyRings/[a-zA-Z0-9_-]{1,63}/cryptoKeys/[a-zA-Z0-9_-]{1,63}"
            if re.fullmatch(rf"{crypto_key}/cryptoKeyVersions/[^/]+", ref):
                raise ValueError(
                    "CUSTODY_KEYSTORE_KEK=gcp-kms:<name> must name the CryptoKey, not one of its versions "
                    "(Decrypt finds the version in the ciphertext)"
                )
            if not re.fullmatch(crypto_key, ref):
                raise ValueError(
                    "CUSTODY_KEYSTORE_KEK=gcp-kms:<name> must be a CryptoKey name "
                    f"projects/<project>/locations/<location>/keyRings/<ring>/cryptoKeys/<key>; got {ref!r}"
                )
        else:
            try:
                kek = base64.b64decode(text, validate=True)
            except ValueError:
                kek = b""
            if len(kek) != 32:
                raise ValueError(
                    "CUSTODY_KEYSTORE_KEK must be base64 of exactly 32 bytes, aws-kms:<key id, alias or ARN> "
                    "or gcp-kms:projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>"
                )
        return SecretStr(text)

    @field_validator("intent_seal_key")
    @classmethod
    def _intent_seal_key_form(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value().strip()
        try:
            key = base64.b64decode(text, validate=True)
        except ValueError:
            key = b""
        if len(key) < 32:
            raise ValueError("CUSTODY_INTENT_SEAL_KEY must be base64 of at least 32 random bytes")
        return SecretStr(text)

    @field_validator("chains")
    @classmethod
    def _lowercase_chain_names(cls, chains: dict[str, ChainSettings]) -> dict[str, ChainSettings]:
        return {name.lower(): chain for name, chain in chains.items()}

    @model_validator(mode="after")
    def _refuse_dev_secrets_in_production(self) -> Settings:
        if self.environment == "production":
            kek = self.keystore_kek.get_secret_value()
            if not kek.startswith(("aws-kms:", "gcp-kms:")) and base64.b64decode(kek) == base64.b64decode(DEV_KEYSTORE_KEK):
                raise ValueError(
                    "CUSTODY_KEYSTORE_KEK must be set to a real key in production "
                    "(base64 of 32 random bytes, aws-kms:<key> or gcp-kms:<crypto key name>)"
                )
            # Compared by value (the decoded bytes), so a re-encoding or stray whitespace
            # around the dev key is still the dev key.
            dev_payload_key = base64.b64decode(DEV_PAYLOAD_KEY)
            if not self.payload_keys or any(_decoded(k.get_secret_value()) == dev_payload_key for k in self.payload_keys.values()):
                raise ValueError("CUSTODY_PAYLOAD_KEYS must hold real keys in production")
            if not self.codec_auth_token.get_secret_value().strip():
                raise ValueError("CUSTODY_CODEC_AUTH_TOKEN is required in production")
            if self.intent_seal_key_bytes == base64.b64decode(DEV_INTENT_SEAL_KEY):
                raise ValueError("CUSTODY_INTENT_SEAL_KEY must be set to a real key in production")
            if self.chaos_exit_after_activity:
                raise ValueError("CUSTODY_CHAOS_EXIT_AFTER_ACTIVITY is for tests only")
            if any(getattr(c, "faucet_enabled", False) for c in self.chains.values()):
                raise ValueError("faucets cannot be enabled in production")
        return self

    @model_validator(mode="after")
    def _known_default_chains(self) -> Settings:
        unknown = [c for c in self.default_wallet_chains if c.lower() not in self.chains]
        if unknown:
            raise ValueError(f"CUSTODY_DEFAULT_WALLET_CHAINS names chains that are not configured: {unknown}")
        self.default_wallet_chains = [c.lower() for c in self.default_wallet_chains]
        return self

    @property
    def webhook_local_receivers_allowed(self) -> bool:
        allowed = self.webhooks.allow_local_receivers
        return self.environment != "production" if allowed is None else allowed

    @cached_property
    def intent_seal_key_bytes(self) -> bytes:
        return base64.b64decode(self.intent_seal_key.get_secret_value().strip(), validate=True)

    @cached_property
    def keystore_kek_bytes(self) -> bytes:
        """The 32 KEK bytes of the base64 form; a KMS KEK has none (signers.kek uses the KMS)."""
        value = self.keystore_kek.get_secret_value()
        if value.startswith(("aws-kms:", "gcp-kms:")):
            raise ValueError("CUSTODY_KEYSTORE_KEK names a KMS key: there are no local KEK bytes")
        return base64.b64decode(value, validate=True)

    def chain(self, name: str) -> ChainSettings:
        chain = self.chains.get(name.lower())
        if chain is None:
            raise UnknownChain(f"chain {name!r} is not configured", chain=name)
        return chain
