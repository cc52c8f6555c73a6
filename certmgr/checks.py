"""System checks: a deployment without encryption or audit keys, or with a bad one, is reported by
``manage.py check --deploy`` (and refuses to store secrets, or to write audit events, at run time)."""

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
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


@register(Tags.security)
def single_sign_on_configured(app_configs, **kwargs):
    """SSO is configured whole or not at all, with a role map that reads."""
    from certmgr.sso_mapping import RoleMapError, parse_role_map

    names = ("CERTMGR_OIDC_ISSUER", "CERTMGR_OIDC_CLIENT_ID", "CERTMGR_OIDC_CLIENT_SECRET")
    given = [name for name in names if getattr(settings, name)]
    if not given:
        return []
    problems: list[CheckMessage] = []
    missing = [name for name in names if name not in given]
    if missing:
        problems.append(
            Error(
                f"single sign-on is half configured: {', '.join(given)} set, {', '.join(missing)} missing",
                id="certmgr.E005",
            )
        )
    try:
        role_map = parse_role_map(settings.CERTMGR_OIDC_ROLE_MAP)
    except RoleMapError as exc:
        problems.append(Error(str(exc), id="certmgr.E006"))
    else:
        if not role_map:
            problems.append(
                Warning(
                    "CERTMGR_OIDC_ROLE_MAP is empty: single sign-on lets no one in (only superusers)",
                    id="certmgr.W001",
                )
            )
    return problems


NETWORK_SETTINGS = (
    "CERTMGR_OUTBOUND_ALLOWED_NETWORKS",
    "CERTMGR_ACME_VALIDATION_ALLOWED_NETWORKS",
    "CERTMGR_OIDC_ALLOWED_NETWORKS",
    "CERTMGR_METRICS_ALLOWED_NETWORKS",
)


@register(Tags.security)
def allowed_networks_valid(app_configs, **kwargs):
    """A typo in an allow-list is reported at start, not at the first connection it was meant to open."""
    import ipaddress

    problems: list[CheckMessage] = []
    for name in NETWORK_SETTINGS:
        for cidr in getattr(settings, name, ()):
            try:
                ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError as exc:
                problems.append(Error(f"{name}: {exc}", hint="a list of CIDRs", id="certmgr.E007"))
    return problems
