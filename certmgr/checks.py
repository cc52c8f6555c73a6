"""System checks: a deployment without encryption keys, or with a bad one, is reported by
``manage.py check --deploy`` (and refuses to store secrets at run time)."""

from django.conf import settings
from django.core.checks import Error, Tags, register
from django.core.exceptions import ImproperlyConfigured

from certmgr import encryption


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
