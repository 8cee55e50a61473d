"""Settings, all from the environment (see .env.example for every variable), and from a
`.env` file at the checkout's root (ENV_FILE names another; empty: none), which never wins over
a variable already set. `make run` writes a development one, so `manage.py` commands in a
second terminal see the same settings as the server.

With nothing set, the portal runs on the embedded default: a SQLite file, a local-memory
cache, in-process limits and Celery tasks run eagerly. DATABASE_URL and REDIS_URL switch it to
the production shape.
"""

from __future__ import annotations

from pathlib import Path

from core.env import (
    ConfigError,
    check_redis_url,
    database_from_env,
    email_from_env,
    env_bool,
    env_int,
    env_list,
    env_str,
    read_env_file,
)

BASE_DIR = Path(__file__).resolve().parent.parent
read_env_file(env_str("ENV_FILE", str(BASE_DIR / ".env")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ConfigError("SECRET_KEY must be set when DEBUG is off (set DEBUG=1 for development)")
    SECRET_KEY = "dev-insecure-secret-key-only-for-DEBUG"
elif not DEBUG and SECRET_KEY.startswith("dev-"):
    # .env.example's and make run's keys: a copied development .env must not reach production.
    raise ConfigError(
        "SECRET_KEY is a development key (from .env.example or make run); set your own when "
        "DEBUG is off"
    )
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", [])

# API keys are stored as HMAC-SHA256(APIKEY_HASH_SECRET, secret). A separate secret from
# SECRET_KEY so each can be rotated on its own. A rotation has two phases (SECURITY.md): first
# the new secret as APIKEY_HASH_SECRET_NEXT (verifies, hashes nothing), then as
# APIKEY_HASH_SECRET with the old one in APIKEY_HASH_SECRET_FALLBACKS (verifies old keys,
# which move to the new secret on use).
APIKEY_HASH_SECRET = env_str("APIKEY_HASH_SECRET") or SECRET_KEY
APIKEY_HASH_SECRET_NEXT = env_str("APIKEY_HASH_SECRET_NEXT") or ""
APIKEY_HASH_SECRET_FALLBACKS = env_list("APIKEY_HASH_SECRET_FALLBACKS", [])

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
PORTAL_BASE_URL = (env_str("PORTAL_BASE_URL") or "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    # First, so that its createsuperuser (which mentions STAFF_REQUIRE_MFA) wins.
    "accounts",
    "portal.apps.PortalAdminConfig",  # django.contrib.admin, as the operator console
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.forms",  # the widget templates, for PortalFormRenderer (portal/forms.py)
    "rest_framework",
    "drf_spectacular",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "portal",
    "apikeys",
    "catalog",
    "inference",
    "metering",
    "ops",
    "audit",
    "notifications",
]

MIDDLEWARE = [
    "core.middleware.RequestIdMiddleware",
    # /v1/ only: CORS (preflights answered before auth) and the SDKs' retry headers.
    "core.api_headers.ApiHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Refuse oversized/malformed requests to /v1/ and /api/ before any body read.
    "core.api_guard.ApiGuardMiddleware",
    "portal.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "accounts.middleware.StaffMFAMiddleware",
]

# The /v1/ API's stack (portal/wsgi.py): no sessions, CSRF, messages, allauth or CSP there.
API_MIDDLEWARE = [
    "core.middleware.RequestIdMiddleware",
    "core.api_headers.ApiHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "core.api_guard.ApiGuardMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

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
                "portal.context_processors.portal",
                "notifications.context_processors.notifications",
            ],
        },
    },
]

FORM_RENDERER = "portal.forms.PortalFormRenderer"

# --- database -------------------------------------------------------------------------------
_db = database_from_env(
    "DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}", base_dir=str(BASE_DIR)
)
if _db["ENGINE"] == "django.db.backends.postgresql":
    # psycopg's pool bounds the PostgreSQL connections of a worker process however many
    # greenlets (open streams) it runs: a greenlet borrows a connection for its queries and
    # gives it back when Django closes it at the end of the request (CONN_MAX_AGE must be 0).
    _db["CONN_MAX_AGE"] = 0
    _db["OPTIONS"] = {
        **_db["OPTIONS"],
        "pool": {
            "min_size": env_int("DB_POOL_MIN_SIZE", 1, minimum=0),
            "max_size": env_int("DB_POOL_MAX_SIZE", 8, minimum=1),
            "timeout": env_int("DB_POOL_TIMEOUT", 30, minimum=1),
        },
    }
else:
    (BASE_DIR / "var").mkdir(exist_ok=True)
    _db["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL;",
    }
DATABASES = {"default": _db}
# A streaming replica of the primary (optional): the heavy reads (usage pages, CSV exports, the
# request log, the admin's usage lists) go there, and only inside `core.db.read_replica()` or
# through `core.db.reads_alias()`; writes, and reads inside a transaction, stay on the primary.
READ_REPLICA: str | None = None
if env_str("DATABASE_REPLICA_URL"):
    _replica = database_from_env("DATABASE_REPLICA_URL", default="", base_dir=str(BASE_DIR))
    if _replica["ENGINE"] != _db["ENGINE"]:
        raise ConfigError("DATABASE_REPLICA_URL must be the same engine as DATABASE_URL")
    _replica["CONN_MAX_AGE"] = _db["CONN_MAX_AGE"]
    _replica["OPTIONS"] = {**_replica["OPTIONS"], **_db["OPTIONS"]}
    DATABASES["replica"] = _replica
    READ_REPLICA = "replica"
DATABASE_ROUTERS = ["core.db.ReplicaRouter"]
# The models whose reads `read_replica()` sends to the replica (model labels, lower case). Other
# models (users, keys, memberships) stay on the primary, where a page right after a change
# finds them.
READ_REPLICA_MODELS = frozenset(
    {"metering.usagerecord", "metering.dailyusage", "metering.usagepending"}
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- cache, Redis, Celery -------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL") or None
# Redis Cluster (docs/redis-cluster.md): every client is a cluster client and REDIS_URL one of
# its startup nodes. Celery's broker (kombu) cannot use a cluster: CELERY_BROKER_URL must then
# name a separate single Redis.
REDIS_CLUSTER = env_bool("REDIS_CLUSTER", False)
# Without Redis every process keeps its own key cache and limit counters: a revocation reaches
# only the worker that made it, and limits multiply by the worker count. Fine for one process
# (the embedded default, or an explicit ALLOW_LOCAL_STATE=1), refused for several in
# production. WEB_CONCURRENCY is gunicorn's worker count (gunicorn.conf.py, default 2).
ALLOW_LOCAL_STATE = env_bool("ALLOW_LOCAL_STATE", False)
if (
    not REDIS_URL
    and not DEBUG
    and not ALLOW_LOCAL_STATE
    and env_int("WEB_CONCURRENCY", 2, minimum=1) > 1
):
    raise ConfigError(
        "REDIS_URL must be set when DEBUG is off and WEB_CONCURRENCY is above 1 (processes "
        "would not share revocations or limits); set ALLOW_LOCAL_STATE=1 for one process"
    )
if REDIS_URL:
    check_redis_url(REDIS_URL)
    CACHES = {
        "default": {
            "BACKEND": "core.cache.PortalRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "portal"),
            "OPTIONS": {
                "pool_class": "redis.BlockingConnectionPool",
                "max_connections": 64,
                "timeout": 5,
            },
        }
    }
    CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL
    if REDIS_CLUSTER and CELERY_BROKER_URL == REDIS_URL:
        raise ConfigError(
            "REDIS_CLUSTER=1 needs CELERY_BROKER_URL: Celery's Redis transport cannot use a "
            "cluster, so its queues go to a separate single Redis (redis://host:port/db)"
        )
    # The broker's queues live under the deployment's prefix too, so two deployments on one
    # Redis database never run each other's tasks (against their own database).
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "global_keyprefix": f"{CACHES['default']['KEY_PREFIX']}:celery:"
    }
    CELERY_TASK_ALWAYS_EAGER = False
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "portal",
        }
    }
    CELERY_BROKER_URL = "memory://"
    CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "aggregate-usage": {"task": "metering.tasks.aggregate_usage", "schedule": 60.0},
    "probe-routers": {"task": "inference.tasks.probe_routers", "schedule": 30.0},
    "prune-usage": {"task": "metering.tasks.prune_usage", "schedule": 3600.0},
    "usage-partitions": {"task": "metering.tasks.usage_partitions", "schedule": 86400.0},
    "drain-usage-spool": {"task": "metering.tasks.drain_usage_spool", "schedule": 30.0},
    "status-history": {"task": "ops.tasks.roll_up_health", "schedule": 60.0},
    "insights": {"task": "ops.tasks.build_insights", "schedule": 600.0},
    "prune-status-history": {"task": "ops.tasks.prune_health", "schedule": 3600.0},
    "notifications-detect": {"task": "notifications.tasks.detect", "schedule": 60.0},
    "webhooks-retry": {"task": "notifications.tasks.retry_webhooks", "schedule": 60.0},
}

# --- notifications and webhooks -------------------------------------------------------------
# Each webhook attempt's whole budget (connect, send, answer).
WEBHOOK_TIMEOUT_SECONDS = env_int("WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1)
# Retries: BASE, 2*BASE, 4*BASE ... (at most MAX apart) for WINDOW after the event.
WEBHOOK_RETRY_BASE_SECONDS = env_int("WEBHOOK_RETRY_BASE_SECONDS", 60, minimum=0)
WEBHOOK_RETRY_MAX_SECONDS = env_int("WEBHOOK_RETRY_MAX_SECONDS", 4 * 3600, minimum=0)
WEBHOOK_RETRY_WINDOW_SECONDS = env_int("WEBHOOK_RETRY_WINDOW_SECONDS", 24 * 3600, minimum=0)
# CA bundle webhook TLS is verified against; empty: the system's.
WEBHOOK_CA_BUNDLE = env_str("WEBHOOK_CA_BUNDLE", "")
# An endpoint whose deliveries have all failed for this long is disabled; its owners are mailed.
WEBHOOK_DISABLE_AFTER_SECONDS = env_int("WEBHOOK_DISABLE_AFTER_SECONDS", 3 * 86400, minimum=1)

# --- limits ---------------------------------------------------------------------------------
# When Redis is unreachable the API fails closed (503) unless this is on; pages keep working.
LIMITS_FAIL_OPEN = env_bool("LIMITS_FAIL_OPEN", False)
# An admitted request not settled by then belonged to a process that died: its concurrency slot
# frees itself and its usage record is written from the admission journal.
LIMITS_INFLIGHT_LEASE_SECONDS = env_int("LIMITS_INFLIGHT_LEASE_SECONDS", 900, minimum=1)
# With Redis, usage records are written in batches off the request path (the admission
# journal in Redis keeps them recoverable until written; see metering/recording.py).
USAGE_WRITE_BATCHED = env_bool("USAGE_WRITE_BATCHED", bool(REDIS_URL))
# Requests refused before admission (bad input, unknown model, a limit) per key and minute that
# still get a usage record; past this the key's refused requests get a 429 and no record.
USAGE_REFUSED_PER_MINUTE = env_int("USAGE_REFUSED_PER_MINUTE", 120, minimum=1)
DEFAULT_PLAN_NAME = env_str("DEFAULT_PLAN", "free")
USAGE_RETENTION_DAYS = env_int("USAGE_RETENTION_DAYS", 90, minimum=1)
# Where usage records wait when neither the database nor Redis takes them (a local file spool).
# Web and worker processes must share it (compose mounts one volume in both).
USAGE_SPOOL_DIR = Path(env_str("USAGE_SPOOL_DIR") or BASE_DIR / "var" / "usage-spool")
# The limits' Redis key prefix; empty: the cache's KEY_PREFIX (metering/limits/keys.py).
LIMITS_KEY_PREFIX = None

# --- auth (django-allauth) ------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
LOGIN_REDIRECT_URL = "/dashboard"
LOGIN_URL = "/accounts/login/"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_EMAIL_VERIFICATION = env_str("ACCOUNT_EMAIL_VERIFICATION", "mandatory")
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Cortensor Portal] "
ACCOUNT_RATE_LIMITS = {
    "login": "30/m/ip",
    "login_failed": "10/m/ip,5/5m/key",
    "signup": "10/m/ip",
    "confirm_email": "1/3m/key",
    "reset_password": "20/m/ip,5/m/key",
    "reset_password_from_key": "20/m/ip",
    "change_password": "5/m/user",
}
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_ADAPTER = "accounts.mfa_adapter.MFAAdapter"
MFA_SECRET = env_str("MFA_SECRET") or APIKEY_HASH_SECRET  # encrypts TOTP keys at rest
MFA_SECRET_FALLBACKS = env_list("MFA_SECRET_FALLBACKS", [])
MFA_TOTP_ISSUER = "Cortensor Portal"
# Staff reach router keys, users and API keys: without an authenticator they are sent to set
# one up before any admin page (accounts.middleware.StaffMFAMiddleware).
STAFF_REQUIRE_MFA = env_bool("STAFF_REQUIRE_MFA", not DEBUG)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- email ----------------------------------------------------------------------------------
# In DEBUG with no EMAIL_URL (`make run`), mail goes to a file outbox under var/mail that the
# dev mailbox page (/dev/mail/) lists; EMAIL_URL=file: asks for it explicitly.
_EMAIL_URL = env_str("EMAIL_URL", "")
if _EMAIL_URL == "file:" or (not _EMAIL_URL and DEBUG):
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(BASE_DIR / "var" / "mail"))
else:
    globals().update(email_from_env("EMAIL_URL"))
    EMAIL_FILE_PATH = ""  # no file outbox: the dev mailbox stays off
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Cortensor Portal <noreply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- REST framework ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # DRF's JSON parser turns JSON nested past the recursion limit into a 500; ours answers 400.
    "DEFAULT_PARSER_CLASSES": ["core.api_guard.JSONParser"],
    # OpenAI's error shape, or Anthropic's for /v1/messages (core.anthropic_errors).
    "EXCEPTION_HANDLER": "core.anthropic_errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Cortensor Portal API",
    "DESCRIPTION": "OpenAI-compatible inference API and key management.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # A chat message has a "role" too: name the organization's roles apart.
    "ENUM_NAME_OVERRIDES": {"OrganizationRoleEnum": "accounts.models.Role"},
}

# --- HTTP, security -------------------------------------------------------------------------
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_REQUEST_BYTES", 1_048_576, minimum=1024)
# Proxies in front of the portal that append to X-Forwarded-For (0: clients connect directly).
# The per-address throttles (failed API keys, allauth's log-in limits) use the address the
# outermost trusted proxy saw.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)
ALLAUTH_TRUSTED_PROXY_COUNT = TRUSTED_PROXY_COUNT
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY", False) else None
)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
# The preload directive is what `check --deploy` asks for; it does nothing until the domain is
# submitted to hstspreload.org. Set SECURE_HSTS_PRELOAD=0 if subdomains may not be HTTPS-only.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# The pages' style-src (portal/csp.py): our own stylesheets only, no inline style.
CSP_STYLE_SRC = "'self'"
SESSION_COOKIE_HTTPONLY = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
# On only for locale/en: the portal's own wording of allauth's English (sentence case,
# "log in"), see locale/en/LC_MESSAGES/django.po. The portal is English-only.
USE_I18N = True
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_TZ = True

STATIC_URL = "/static/"
# Where collectstatic writes (and whitenoise serves from): the checkout by default.
STATIC_ROOT = Path(env_str("STATIC_ROOT") or BASE_DIR / "staticfiles")
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG

LOG_FORMAT = env_str("LOG_FORMAT", "text" if DEBUG else "json")
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.logging.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "core.logging.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- tests --------------------------------------------------------------------------------
TESTING = env_bool("PORTAL_TESTING", False)
if TESTING:
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# A stream waiting on a slow router sends an SSE comment this often, so proxies and clients
# do not time the connection out before the first token.
STREAM_KEEPALIVE_SECONDS = env_int("STREAM_KEEPALIVE_MS", 10_000, minimum=100) / 1000

# --- what a router may send back, and how long a stream may hold a worker ---------------------
# A router's JSON answer (and any one SSE event) larger than this is refused as upstream_error.
UPSTREAM_MAX_BYTES = env_int("UPSTREAM_MAX_BYTES", 8 * 1024 * 1024, minimum=1024)
# A stream that lasts this long is ended with the error chunk and [DONE].
STREAM_MAX_SECONDS = env_int("STREAM_MAX_SECONDS", 900, minimum=1)
# A streamed write the client does not take within this many seconds (it stopped reading)
# ends the stream, so a slow reader cannot hold a worker's greenlet and a router forever.
STREAM_WRITE_TIMEOUT_SECONDS = env_int("STREAM_WRITE_TIMEOUT_SECONDS", 60, minimum=1)

# How often (seconds) a process checks the catalog's version stamp in the shared cache.
CATALOG_CHECK_SECONDS = float(env_int("CATALOG_CHECK_MS", 1000, minimum=0)) / 1000

# --- serving and metrics ------------------------------------------------------------------
# /metrics wants `Authorization: Bearer <METRICS_TOKEN>` when set; unset, only direct loopback
# clients may scrape it (see portal/metrics.py).
METRICS_TOKEN = env_str("METRICS_TOKEN") or None

# --- bad input --------------------------------------------------------------------------------
# The API guard (core/api_guard.py) answers 431 past these, before any view reads the request.
API_MAX_HEADER_BYTES = 16 * 1024
API_MAX_HEADERS_TOTAL_BYTES = 32 * 1024
# The playground's own rate per user: a person typing, not a script (scripts use /v1/ and a key).
PLAYGROUND_RATE = "30/m"
