"""Settings for certmgr, read from the environment (twelve-factor).

Defaults serve one machine: SQLite under ``var/`` and the django-q2 ORM broker. Production sets
``DATABASE_URL`` (PostgreSQL), ``REDIS_URL``, ``SECRET_KEY``, ``ALLOWED_HOSTS`` and
``CERTMGR_ENCRYPTION_KEYS``; see README.md.
"""

from __future__ import annotations

import secrets
import sys
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("CERTMGR_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)

# Commands that must work before the deployment is configured.
_KEYLESS_COMMANDS = {"generate_encryption_key", "generate_audit_key"}


def _secret_key() -> str:
    key = env.str("SECRET_KEY", default="")
    if key:
        return key
    if DEBUG:
        # A development key, generated once and kept under var/ so sessions and data survive restarts.
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path = VAR_DIR / "dev-secret-key"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(50))
            path.chmod(0o600)
        return path.read_text().strip()
    if sys.argv[1:2] and sys.argv[1] in _KEYLESS_COMMANDS:
        return "unused-" + secrets.token_urlsafe(50)
    raise ImproperlyConfigured(
        "SECRET_KEY is not set. Set the SECRET_KEY environment variable to a long random string "
        "(for example: python -c 'import secrets; print(secrets.token_urlsafe(50))'), "
        "or set DEBUG=1 for a development key."
    )


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "axes",
    "django_otp",
    "certmgr",
    "dnsproviders",
    "pki",
    "acmeca",
    "syncs",
    "acmeserver",
    "reports",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "certmgr.middleware.RequestContextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",  # tells whether the session passed the second factor
    "certmgr.two_factor_middleware.TwoFactorMiddleware",  # until it has, only the second step is open
    "certmgr.denials.DeniedPageAuditMiddleware",
    "certmgr.middleware.AdminServiceErrorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: answers a locked-out login with the lockout page
]

ROOT_URLCONF = "certmgr.urls"
WSGI_APPLICATION = "certmgr.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'certmgr.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions take the write lock up front, so two writers cannot both read the same
    # audit chain head; a timeout makes a busy database wait instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"transaction_mode": "IMMEDIATE", "timeout": 20})
    if DATABASES["default"]["NAME"] not in ("", ":memory:"):
        Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth -----------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"
# Admin logins are throttled per user name and per client address (django-axes): after
# CERTMGR_LOGIN_FAILURE_LIMIT failures either is locked out for CERTMGR_LOGIN_LOCKOUT_MINUTES.
AUTHENTICATION_BACKENDS = [
    "certmgr.logins.ThrottledLoginBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("CERTMGR_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("CERTMGR_LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one locks
AXES_CLIENT_IP_CALLABLE = "certmgr.middleware.client_ip"  # the same client address as the audit log's
# A complete login forgets the failures of its user name and address: after the password, or after the code
# for a user who owes a second factor (certmgr.two_factor), so a password login cannot wipe wrong codes.
AXES_RESET_ON_SUCCESS = False
AXES_LOCKOUT_TEMPLATE = "admin/certmgr/locked_out.html"
AXES_VERBOSE = False  # lockouts are audit events (certmgr.logins); no banner in every command's output

# Single sign-on to the admin through OpenID Connect (mozilla-django-oidc), off unless the issuer and the
# client id are set. The provider's groups claim grants organization roles through the role map, JSON
# {"<group claim value>": "<org-slug>:<role>"}; see docs/guide/security.md.
CERTMGR_OIDC_ISSUER = env.str("CERTMGR_OIDC_ISSUER", default="").rstrip("/")
CERTMGR_OIDC_CLIENT_ID = env.str("CERTMGR_OIDC_CLIENT_ID", default="")
CERTMGR_OIDC_CLIENT_SECRET = env.str("CERTMGR_OIDC_CLIENT_SECRET", default="")
CERTMGR_OIDC_SCOPES = env.str("CERTMGR_OIDC_SCOPES", default="openid email profile")
CERTMGR_OIDC_SIGN_ALGO = env.str("CERTMGR_OIDC_SIGN_ALGO", default="RS256")
CERTMGR_OIDC_GROUPS_CLAIM = env.str("CERTMGR_OIDC_GROUPS_CLAIM", default="groups")
CERTMGR_OIDC_USERNAME_CLAIM = env.str("CERTMGR_OIDC_USERNAME_CLAIM", default="preferred_username")
CERTMGR_OIDC_ROLE_MAP = env.str("CERTMGR_OIDC_ROLE_MAP", default="")
# The provider's endpoints (discovery, token, userinfo, JWKS) are reached through the outbound guard: CIDRs
# they may be at although private or loopback (an identity provider on the internal network), for SSO only.
CERTMGR_OIDC_ALLOWED_NETWORKS = env.list("CERTMGR_OIDC_ALLOWED_NETWORKS", default=[])
AUTHENTICATION_BACKENDS.append("certmgr.sso_login.SingleSignOnBackend")  # answers only SSO callbacks

# Two-factor authentication (TOTP authenticator apps, django-otp): which members must use it is each
# organization's rule; superusers must too when CERTMGR_TWO_FACTOR_SUPERUSERS is on. After a wrong code the
# next one is accepted only after THROTTLE_SECONDS * 2^(failures - 1) seconds; wrong codes also count toward
# the login lockout above. ISSUER names certmgr in the authenticator app.
CERTMGR_TWO_FACTOR_SUPERUSERS = env.bool("CERTMGR_TWO_FACTOR_SUPERUSERS", default=False)
CERTMGR_TWO_FACTOR_THROTTLE_SECONDS = env.int("CERTMGR_TWO_FACTOR_THROTTLE_SECONDS", default=1)
CERTMGR_TWO_FACTOR_ISSUER = env.str("CERTMGR_TWO_FACTOR_ISSUER", default="certmgr")

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True
# One date format on every page: 2026-12-02 14:37:05 UTC (certmgr/formats/en/formats.py).
FORMAT_MODULE_PATH = ["certmgr.formats"]
DATETIME_FORMAT = "Y-m-d H:i:s T"
DATE_FORMAT = "Y-m-d"

STATIC_URL = "static/"
STATIC_ROOT = env.str("STATIC_ROOT", default=str(VAR_DIR / "static"))

# --- Request limits -------------------------------------------------------------------------------
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("CERTMGR_MAX_REQUEST_BYTES", default=1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE
DATA_UPLOAD_MAX_NUMBER_FIELDS = 2000

# --- Security (production defaults; each can be relaxed from the environment) ---------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_TLS_PROXY", False) else None
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# The HTTP-01 responder, the health check, CRLs, CA certificates and OCSP must answer on plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^\.well-known/acme-challenge/", r"^healthz$", r"^pki/ca/", r"^ocsp/"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# The proxies in front of certmgr whose X-Forwarded-For is believed (the audit log's client IP, the /metrics
# allow-list): how many there are, or their CIDRs; off by default.
CERTMGR_TRUST_X_FORWARDED_FOR = env.str("CERTMGR_TRUST_X_FORWARDED_FOR", default="")

# --- certmgr --------------------------------------------------------------------------------------
# Full CRLs are valid this long; the schedule rebuilds them once less than half is left (and, for a CA with
# delta CRLs off, every revocation does).
CERTMGR_CRL_VALIDITY_HOURS = env.int("CERTMGR_CRL_VALIDITY_HOURS", default=24)
# Delta CRLs (CAs with delta CRLs on) are valid this long: rebuilt on every revocation, with each full CRL,
# and by the schedule once less than half is left. Keep it at least twice CERTMGR_CRL_REFRESH_MINUTES.
CERTMGR_DELTA_CRL_VALIDITY_HOURS = env.int("CERTMGR_DELTA_CRL_VALIDITY_HOURS", default=4)
# How long relying parties and caches may keep a served CRL (Cache-Control max-age, seconds): for this long
# after a revocation a cached copy may still trust the certificate. Never past the CRL's nextUpdate.
CERTMGR_CRL_MAX_AGE_SECONDS = env.int("CERTMGR_CRL_MAX_AGE_SECONDS", default=300)
# OCSP (pki.ocsp): pre-signed responses are valid this long and refreshed by the schedule once less than half
# of it is left; delegated responder certificates last this many days and are replaced two days before.
CERTMGR_OCSP_VALIDITY_HOURS = env.int("CERTMGR_OCSP_VALIDITY_HOURS", default=24)
CERTMGR_OCSP_RESPONDER_DAYS = env.int("CERTMGR_OCSP_RESPONDER_DAYS", default=7)
CERTMGR_OCSP_REFRESH_MINUTES = env.int("CERTMGR_OCSP_REFRESH_MINUTES", default=30)
# Each web process adds its count of OCSP answers (the metrics) to the database at most this often (seconds;
# 0: at every request): /metrics lags by up to this long, and a process killed with SIGKILL loses as much.
CERTMGR_OCSP_COUNT_FLUSH_SECONDS = env.float("CERTMGR_OCSP_COUNT_FLUSH_SECONDS", default=2.0)
# How often a web process adds its ACME server refusal counts (badNonce, rateLimited...) to the database.
CERTMGR_ACME_COUNT_FLUSH_SECONDS = env.float("CERTMGR_ACME_COUNT_FLUSH_SECONDS", default=2.0)
# Fernet keys, comma-separated: the first encrypts, all decrypt (rotation by key list).
CERTMGR_ENCRYPTION_KEYS = env.list("CERTMGR_ENCRYPTION_KEYS", default=[])
# Audit-log HMAC keys, comma-separated (certmgr.audit_keys): the first links new events and signs checkpoints,
# all verify. Keep them out of the database: the keys are what a database role cannot forge links without.
CERTMGR_AUDIT_KEYS = env.list("CERTMGR_AUDIT_KEYS", default=[])
# Signed checkpoints of every audit chain's head, outside the database (certmgr.audit_checkpoints): a
# directory (files created once, never rewritten) and optionally an S3 bucket (boto3's usual AWS_* settings).
CERTMGR_AUDIT_CHECKPOINT_DIR = env.str(
    "CERTMGR_AUDIT_CHECKPOINT_DIR", default=str(VAR_DIR / "audit-checkpoints")
)
CERTMGR_AUDIT_CHECKPOINT_S3_BUCKET = env.str("CERTMGR_AUDIT_CHECKPOINT_S3_BUCKET", default="")
CERTMGR_AUDIT_CHECKPOINT_S3_PREFIX = env.str(
    "CERTMGR_AUDIT_CHECKPOINT_S3_PREFIX", default="audit-checkpoints/"
)
CERTMGR_AUDIT_CHECKPOINT_MINUTES = env.int("CERTMGR_AUDIT_CHECKPOINT_MINUTES", default=60)
CERTMGR_BASE_URL = env.str("CERTMGR_BASE_URL", default="http://localhost:8000").rstrip("/")
# CIDRs that user-typed endpoints may reach although private/loopback (e.g. 127.0.0.0/8 in tests).
CERTMGR_OUTBOUND_ALLOWED_NETWORKS = env.list("CERTMGR_OUTBOUND_ALLOWED_NETWORKS", default=[])
CERTMGR_OUTBOUND_TIMEOUT = env.float("CERTMGR_OUTBOUND_TIMEOUT", default=10.0)
# ACME orders: a worker's lease on an order (renewed while it runs), polling, retries of transient failures.
CERTMGR_ACME_LEASE_SECONDS = env.int("CERTMGR_ACME_LEASE_SECONDS", default=120)
CERTMGR_ACME_POLL_TIMEOUT = env.float("CERTMGR_ACME_POLL_TIMEOUT", default=120.0)
CERTMGR_ACME_MAX_ATTEMPTS = env.int("CERTMGR_ACME_MAX_ATTEMPTS", default=8)
CERTMGR_ACME_RETRY_BASE_SECONDS = env.float("CERTMGR_ACME_RETRY_BASE_SECONDS", default=2.0)
# Retries due within this many seconds wait in the worker (holding the order); later ones go to the janitor.
CERTMGR_ACME_INLINE_RETRY_SECONDS = env.float("CERTMGR_ACME_INLINE_RETRY_SECONDS", default=10.0)
CERTMGR_ACME_RETRY_MAX_SECONDS = env.float("CERTMGR_ACME_RETRY_MAX_SECONDS", default=3600.0)
# Removals of a challenge record that fail for a permanent reason (the provider refuses: 4xx, no zone) stop
# after this many tries, shown on the order and alerted once; network failures are retried without limit.
CERTMGR_ACME_CLEANUP_MAX_ATTEMPTS = env.int("CERTMGR_ACME_CLEANUP_MAX_ATTEMPTS", default=5)
CERTMGR_DNS_PROVIDER_TIMEOUT = env.float("CERTMGR_DNS_PROVIDER_TIMEOUT", default=10.0)
# Delegated DNS (connection kind "delegated"): certmgr's own authoritative server (manage.py dns_server).
# Its host name is the target of the operator's `_acme-challenge.<name>. NS <server name>` records.
CERTMGR_DNS_SERVER_NAME = env.str("CERTMGR_DNS_SERVER_NAME", default="")
# host:port or [v6]:port for UDP and TCP; production uses port 53 (make run: 127.0.0.1:8053).
CERTMGR_DNS_LISTEN = env.str("CERTMGR_DNS_LISTEN", default="0.0.0.0:53")
# Response rate limiting per client address: answers per second and burst (0: no limit). Over the limit
# every SLIP-th answer is a truncated (TC=1) one that sends a real resolver to TCP; the rest are dropped.
CERTMGR_DNS_RATE_LIMIT = env.float("CERTMGR_DNS_RATE_LIMIT", default=50.0)
CERTMGR_DNS_RATE_BURST = env.float("CERTMGR_DNS_RATE_BURST", default=100.0)
CERTMGR_DNS_RATE_SLIP = env.int("CERTMGR_DNS_RATE_SLIP", default=2)
# How long the server keeps its snapshot of live challenges and delegated names (seconds).
CERTMGR_DNS_CACHE_SECONDS = env.float("CERTMGR_DNS_CACHE_SECONDS", default=1.0)
# How long a presented challenge stays served when its order never cleans it up (a crashed worker).
CERTMGR_DNS_CHALLENGE_HOURS = env.int("CERTMGR_DNS_CHALLENGE_HOURS", default=24)
# The ACME server's challenge validator (acmeserver.validation): the port HTTP-01 asks (80; tests use a free
# one), the networks it may connect to (private CAs validate internal names: list them; nothing else outside
# the public internet is reached), the resolvers it asks for A/AAAA/TXT (host:port,...; unset: the system's
# resolver for addresses, the zone's authoritative servers for TXT) and the time each fetch may take.
CERTMGR_ACME_VALIDATION_HTTP_PORT = env.int("CERTMGR_ACME_VALIDATION_HTTP_PORT", default=80)
CERTMGR_ACME_VALIDATION_TLS_PORT = env.int("CERTMGR_ACME_VALIDATION_TLS_PORT", default=443)  # tls-alpn-01
CERTMGR_ACME_VALIDATION_ALLOWED_NETWORKS = env.list("CERTMGR_ACME_VALIDATION_ALLOWED_NETWORKS", default=[])
CERTMGR_ACME_VALIDATION_RESOLVERS = env.str("CERTMGR_ACME_VALIDATION_RESOLVERS", default="")
CERTMGR_ACME_VALIDATION_TIMEOUT = env.float("CERTMGR_ACME_VALIDATION_TIMEOUT", default=10.0)
# A poll of an authorization being validated waits this long for the worker's outcome (0: answer at once).
CERTMGR_ACME_AUTHZ_HOLD_SECONDS = env.float("CERTMGR_ACME_AUTHZ_HOLD_SECONDS", default=2.0)
# How long a nonce, an order and a valid authorization of the ACME server live (a valid authorization serves
# the account's later orders for the same identifier until then).
CERTMGR_ACME_NONCE_SECONDS = env.int("CERTMGR_ACME_NONCE_SECONDS", default=3600)
CERTMGR_ACME_ORDER_DAYS = env.int("CERTMGR_ACME_ORDER_DAYS", default=7)
CERTMGR_ACME_AUTHORIZATION_DAYS = env.int("CERTMGR_ACME_AUTHORIZATION_DAYS", default=30)
# RFC 9773: how long clients should wait before asking the ACME server's renewalInfo again (Retry-After).
CERTMGR_ACME_ARI_RETRY_SECONDS = env.int("CERTMGR_ACME_ARI_RETRY_SECONDS", default=6 * 3600)
# Lifecycle: the renewal sweep, backoff of failed renewals.
CERTMGR_RENEWAL_SWEEP_MINUTES = env.int("CERTMGR_RENEWAL_SWEEP_MINUTES", default=10)
CERTMGR_CRL_REFRESH_MINUTES = env.int("CERTMGR_CRL_REFRESH_MINUTES", default=60)
CERTMGR_EXPIRY_ALERT_MINUTES = env.int("CERTMGR_EXPIRY_ALERT_MINUTES", default=24 * 60)
CERTMGR_JANITOR_MINUTES = env.int("CERTMGR_JANITOR_MINUTES", default=1)
# Requests with bearer tokens that name no token, per client address and minute, before 429 answers.
CERTMGR_ANONYMOUS_AUTH_FAILURES_PER_MINUTE = env.int("CERTMGR_ANONYMOUS_AUTH_FAILURES_PER_MINUTE", default=30)
# Alerts: expiry thresholds (days before notAfter, each sent once per certificate), delivery retries.
CERTMGR_EXPIRY_ALERT_DAYS = env.list("CERTMGR_EXPIRY_ALERT_DAYS", cast=int, default=[30, 14, 7, 1])
CERTMGR_ALERT_MAX_ATTEMPTS = env.int("CERTMGR_ALERT_MAX_ATTEMPTS", default=8)
CERTMGR_ALERT_RETRY_BASE_SECONDS = env.float("CERTMGR_ALERT_RETRY_BASE_SECONDS", default=60.0)
CERTMGR_ALERT_RETRY_MAX_SECONDS = env.float("CERTMGR_ALERT_RETRY_MAX_SECONDS", default=3600.0)
CERTMGR_ALERT_DELIVERY_MINUTES = env.int("CERTMGR_ALERT_DELIVERY_MINUTES", default=5)
# Certificate syncs (syncs): attempts of one run, its backoff, and how often destinations are re-read.
CERTMGR_SYNC_MAX_ATTEMPTS = env.int("CERTMGR_SYNC_MAX_ATTEMPTS", default=6)
CERTMGR_SYNC_RETRY_BASE_SECONDS = env.float("CERTMGR_SYNC_RETRY_BASE_SECONDS", default=60.0)
CERTMGR_SYNC_RETRY_MAX_SECONDS = env.float("CERTMGR_SYNC_RETRY_MAX_SECONDS", default=3600.0)
CERTMGR_SYNC_DRIFT_MINUTES = env.int("CERTMGR_SYNC_DRIFT_MINUTES", default=60)
# Outbound HTTPS of Azure Key Vault and webhook destinations: a PEM file of the CAs to trust instead of
# certifi's (a private receiver's CA; the tests' loopback servers); empty: certifi's bundle.
CERTMGR_SYNC_CA_BUNDLE = env.str("CERTMGR_SYNC_CA_BUNDLE", default="")
# Azure: the Entra ID authority the client secret is sent to, and the Key Vault DNS suffixes a vault URL
# may end in (public cloud, China, US Government); a sovereign cloud adds its own.
CERTMGR_AZURE_AUTHORITY_HOST = env.str("CERTMGR_AZURE_AUTHORITY_HOST", default="login.microsoftonline.com")
CERTMGR_AZURE_VAULT_SUFFIXES = env.list(
    "CERTMGR_AZURE_VAULT_SUFFIXES", default=["vault.azure.net", "vault.azure.cn", "vault.usgovcloudapi.net"]
)
CERTMGR_RENEWAL_RETRY_BASE_SECONDS = env.float("CERTMGR_RENEWAL_RETRY_BASE_SECONDS", default=300.0)
CERTMGR_RENEWAL_RETRY_MAX_SECONDS = env.float("CERTMGR_RENEWAL_RETRY_MAX_SECONDS", default=6 * 3600.0)
# API tokens: last_used_at is written at most this often (seconds), not on every request.
CERTMGR_TOKEN_LAST_USED_INTERVAL = env.int("CERTMGR_TOKEN_LAST_USED_INTERVAL", default=60)
# Member invitations: how long the one-time link stays valid.
CERTMGR_INVITATION_DAYS = env.int("CERTMGR_INVITATION_DAYS", default=7)
# /metrics: CIDRs (comma-separated) that may scrape without an API token; per-subscriber series cap.
CERTMGR_METRICS_ALLOWED_NETWORKS = env.list("CERTMGR_METRICS_ALLOWED_NETWORKS", default=[])
CERTMGR_METRICS_MAX_SUBSCRIBERS = env.int("CERTMGR_METRICS_MAX_SUBSCRIBERS", default=10_000)
# /metrics: a scrape's body (counts over the whole inventory, per-subscriber series) is reused this long.
CERTMGR_METRICS_CACHE_SECONDS = env.int("CERTMGR_METRICS_CACHE_SECONDS", default=30)
# /healthz: the worker is unhealthy when no scheduler has run the periodic jobs for this long.
CERTMGR_HEALTH_WORKER_MAX_AGE = env.int("CERTMGR_HEALTH_WORKER_MAX_AGE", default=300)

# --- REST API -------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "certmgr.api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["certmgr.api.permissions.RolePermission"],
    "DEFAULT_PAGINATION_CLASS": "certmgr.api.pagination.CursorPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "certmgr.api.exceptions.exception_handler",
    "DEFAULT_PARSER_CLASSES": [
        "certmgr.api.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
# Content-Security-Policy on every answer: scripts only from certmgr itself (no inline script anywhere; the
# Swagger UI loads its initialiser from a URL), styles may be inline (the admin's and our badges use them).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

SPECTACULAR_SETTINGS = {
    "TITLE": "certmgr API",
    "DESCRIPTION": (
        "Certificate inventory and lifecycle management. Authenticate with `Authorization: Bearer <token>`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from the installed sidecar package: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Two models have a "kind" field: name their enums apart.
    "ENUM_NAME_OVERRIDES": {
        "AlertChannelKindEnum": "pki.models.AlertChannel.Kind",
        "SyncDestinationKindEnum": "syncs.choices.DestinationKind.choices",
    },
}

# --- Workers (django-q2) --------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
Q_CLUSTER = {
    "name": "certmgr",
    "workers": env.int("CERTMGR_WORKERS", default=2),
    "timeout": env.int("CERTMGR_TASK_TIMEOUT", default=300),
    "retry": env.int("CERTMGR_TASK_RETRY", default=360),
    "max_attempts": 1,
    "catch_up": False,
    "label": "Tasks",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    # How often an idle worker asks the database for tasks: an order waits for at most this long.
    Q_CLUSTER["poll"] = env.float("CERTMGR_ORM_POLL", default=0.1)

# --- Logging --------------------------------------------------------------------------------------
from certmgr.logs import logging_config  # noqa: E402 (settings read first)

LOGGING = logging_config(
    json=env.bool("CERTMGR_LOG_JSON", default=not DEBUG), level=env.str("LOG_LEVEL", default="INFO")
)
