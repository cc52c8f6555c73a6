"""The admin index and sidebar grouped by the work (inventory, issuance, CAs, connections, alerts, the
organization) instead of by Django app label.

``admin.site.get_app_list`` is wrapped (like the dashboard's URL in ``dashboard_admin``) rather than
replaced by an AdminSite subclass, so every ``admin.site.register`` keeps working. Django's own permission
checks still decide which models a user sees; the groups only arrange them. The framework's tables (task
queue, users and groups, login attempts) are shown to superusers only, whatever permissions a staff user
holds: members are managed through organizations, never through ``auth``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

# (group title, its CSS/anchor label, [(app_label, model object_name) or a page: ("page", url name, label)])
GROUPS: list[tuple[str, str, list[tuple[str, ...]]]] = [
    (
        "Inventory",
        "inventory",
        [("page", "admin:dashboard", "Dashboard"), ("pki", "Certificate"), ("pki", "CertificateRequest")],
    ),
    ("Issuance", "issuance", [("pki", "Subscriber"), ("pki", "Policy")]),
    (
        "Certificate authorities",
        "authorities",
        [
            ("pki", "CertificateAuthority"),
            ("page", "admin:pki_certificateauthority_hierarchy", "CA hierarchy"),
            ("pki", "Crl"),
            ("acmeca", "AcmeAccount"),
            ("acmeca", "AcmeOrder"),
            ("acmeca", "AcmeChallenge"),
        ],
    ),
    (
        "Enrollment (ACME server)",
        "enrollment",
        [
            ("acmeserver", "AcmeProfile"),
            ("acmeserver", "AcmeOrderProfile"),
            ("acmeserver", "AcmeEabKey"),
            ("acmeserver", "AcmeEarlyRenewal"),
            ("acmeserver", "AcmeServerAccount"),
            ("acmeserver", "AcmeServerOrder"),
            ("acmeserver", "AcmeServerAuthorization"),
        ],
    ),
    ("Deployment", "deployment", [("syncs", "SyncDestination"), ("syncs", "SyncRule"), ("syncs", "SyncRun")]),
    ("Connections", "connections", [("dnsproviders", "AppConnection")]),
    ("Alerts", "alerts", [("pki", "AlertRule"), ("pki", "AlertChannel"), ("pki", "AlertDelivery")]),
    (
        "Organization",
        "organization",
        [
            ("certmgr", "Organization"),
            ("certmgr", "Membership"),
            ("certmgr", "Invitation"),
            ("certmgr", "ApiToken"),
            ("certmgr", "AuditEvent"),
            ("certmgr", "JobRun"),
        ],
    ),
]
# Names that read better than the models' verbose names in a menu.
MENU_NAMES = {
    ("pki", "CertificateAuthority"): "Certificate authorities (private and ACME)",
    ("pki", "CertificateRequest"): "CSRs",
    ("acmeca", "AcmeChallenge"): "ACME challenge records",
    ("dnsproviders", "AppConnection"): "DNS providers",
    ("certmgr", "Membership"): "Members",
}
SUPERUSER_ONLY_APPS = {"auth", "django_q", "axes"}
SYSTEM_GROUP = ("System (superusers)", "system")


def _page(url_name: str, label: str) -> dict[str, Any] | None:
    try:
        url = reverse(url_name)
    except NoReverseMatch:
        return None
    name = url_name.rsplit(":", 1)[-1]
    return {"name": label, "object_name": name, "admin_url": url, "add_url": None, "view_only": True}


def group_apps(apps: list[dict[str, Any]], *, superuser: bool) -> list[dict[str, Any]]:
    """Django's per-app list (already filtered by permission) rearranged into the work's groups; pages
    (the dashboard, the CA hierarchy) join a group only when the user sees a model of the group."""
    models: dict[tuple[str, str], dict[str, Any]] = {}
    leftovers: list[dict[str, Any]] = []
    for app in apps:
        for model in app["models"]:
            key = (app["app_label"], model["object_name"])
            models[key] = model
    placed: set[tuple[str, str]] = set()
    grouped = []
    for title, label, entries in GROUPS:
        rows: list[dict[str, Any]] = []
        has_model = False
        for entry in entries:
            if entry[0] == "page":
                if (page := _page(entry[1], entry[2])) is not None:
                    rows.append(page)
                continue
            key = (entry[0], entry[1])
            if key in models:
                rows.append({**models[key], "name": MENU_NAMES.get(key, models[key]["name"])})
                placed.add(key)
                has_model = True
        if has_model:  # nothing of the group is visible: no group, not even its pages
            grouped.append(_group(title, label, rows))
    for app in apps:
        if app["app_label"] in SUPERUSER_ONLY_APPS and not superuser:
            continue
        rest = [m for m in app["models"] if (app["app_label"], m["object_name"]) not in placed]
        if rest:
            leftovers.extend({**m, "name": f"{m['name']} ({app['name']})"} for m in rest)
    if leftovers:
        grouped.append(_group(*SYSTEM_GROUP, leftovers))
    return grouped


def _group(title: str, label: str, models: list[dict[str, Any]]) -> dict[str, Any]:
    # The keys Django's app_list.html reads; ``app_url`` empty: a group has no page of its own.
    return {"name": title, "app_label": label, "app_url": "", "has_module_perms": True, "models": models}


def _install() -> None:
    site = admin.site
    if getattr(site, "_certmgr_grouped_index", False):
        return
    original = site.get_app_list

    def get_app_list(request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        apps = original(request, app_label)
        superuser = bool(getattr(request.user, "is_superuser", False))
        if app_label is not None:  # an app's own index page (/admin/pki/): Django's list, filtered
            return [a for a in apps if superuser or a["app_label"] not in SUPERUSER_ONLY_APPS]
        return group_apps(apps, superuser=superuser)

    # Wrapped like the dashboard's URLs (see dashboard_admin): mypy refuses any such patch.
    site.get_app_list = get_app_list  # type: ignore[method-assign]
    site.site_url = "/admin/dashboard/"  # "View site" leads to the dashboard
    site._certmgr_grouped_index = True  # type: ignore[attr-defined]  # the marker read above


_install()
