"""Test settings: production settings with test keys, on PostgreSQL unless DATABASE_URL says otherwise."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/certmgr")
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-" + "x" * 40)
# Two keys, so every test exercises decryption through a key list.
os.environ.setdefault(
    "CERTMGR_ENCRYPTION_KEYS",
    "tF2bN6l7Tq8u6R9rJ3xZ0m0E1wq7y8v5b4n3m2l1k0A=,Yc0bX9rW3vT6uS2pQ8oN4mL7kJ1iH5gF0eD9cB3aZ2Y=",
)
# Two audit keys too: the second only verifies (a rotated-out key).
os.environ.setdefault(
    "CERTMGR_AUDIT_KEYS",
    "test-audit-key-1-not-for-production-0123456789,test-audit-key-0-not-for-production-0123456789",
)
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("SESSION_COOKIE_SECURE", "0")
os.environ.setdefault("CSRF_COOKIE_SECURE", "0")
os.environ.setdefault("ALLOWED_HOSTS", "*")
os.environ.setdefault("CERTMGR_BASE_URL", "http://certs.acme.test")  # pkilint checks the URIs

from certmgr.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast test users
Q_CLUSTER = {**Q_CLUSTER, "sync": True}  # noqa: F405  tasks run inline in tests
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":  # noqa: F405
    # pytest-django empties the tables between transactional tests by TRUNCATE, which the audit tables'
    # triggers refuse unless a superuser session sets this (certmgr/0008).
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = "-c certmgr.allow_truncate=on"  # noqa: F405
CERTMGR_METRICS_CACHE_SECONDS = 0  # each scrape computes; tests/reports/test_metrics.py turns the cache on
