"""System checks: a deployment without encryption or audit keys, or with a bad one, is reported by
``manage.py check --deploy`` (and refuses to store secrets, or to write audit events, at run time)."""

from django.conf import settings
from django.core.checks import Error, Tags, register
from django.core.exceptions import ImproperlyConfigured

from certmgr import audit_keys, encryption


@register(Tags.security, deploy=True)
def encryption_keys_configured(app_configs, **kwargs):
    if not settings.CERTMGR_ENCRYPTION_KEYS:
        return [Error(encryption.MISSING_KEY_MESSAGE, id="certmgr.E001")]
    return []


@register(Tags.security)
def encryption_keys_valid(app_configs, **kwargs):
    if not settings.CERTMGR_ENCRYPTION_KEYS:
        return []
    try:
        encryption.fernet()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="certmgr.E002")]
    return []


@register(Tags.security, deploy=True)
def audit_keys_configured(app_configs, **kwargs):
    if not settings.CERTMGR_AUDIT_KEYS:
        return [Error(audit_keys.MISSING_KEY_MESSAGE, id="certmgr.E003")]
    return []


@register(Tags.security)
def audit_keys_valid(app_configs, **kwargs):
    if not settings.CERTMGR_AUDIT_KEYS:
        return []
    try:
        audit_keys.keys()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="certmgr.E004")]
    return []
