"""The certificate inventory: a million-row list, details, downloads, revoke, renew, import."""

from __future__ import annotations

import re

from cryptography import x509 as cx509
from cryptography.hazmat.primitives import serialization
from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from certmgr import errors
from certmgr.actors import as_actor
from certmgr.admin_base import (
    ACTION_LIMIT,
    CappedCountPaginator,
    OrganizationFilter,
    admin_link,
    apply_service_errors,
    badge,
    datetime_text,
    download,
    error_text,
    filename,
    when,
)
from pki import deployment, issuers, services, x509
from pki import forms as pki_forms
from pki.admin import panels
from pki.admin.base import ReadOnlyPkiAdmin
from pki.admin.filters import (
    CaFilter,
    DeploymentFilter,
    ExpiringWithinFilter,
    SubscriberFilter,
)
from pki.admin.outcomes import live_context, outcome_redirect, say_pending
from pki.admin.rendering import STATUS_COLORS, colon_hex, pem_block, x509_details
from pki.issuers import Outcome
from pki.models import (
    Certificate,
    RevocationReason,
)
from pki.querysets import HAS_PRIVATE_KEY

# --- certificates --------------------------------------------------------------------------------------
LIST_COLUMNS = (
    "id",
    "organization",
    "organization__name",
    "ca",
    "ca__name",
    "subscriber",
    "subscriber__name",
    "common_name",
    "serial",
    "status",
    "not_after",
    "next_renewal_at",
    "key_algorithm",
    "source",
)
_HEX = re.compile(r"^[0-9a-f]+$")
# Whether an encrypted key is stored, without loading (and decrypting) it.


class CertificateChangeList(ChangeList):
    """Loads only the listed columns: no PEM, chain or encrypted key per row."""

    def get_queryset(self, request, exclude_parameters=None):
        return super().get_queryset(request, exclude_parameters).only(*LIST_COLUMNS)


def revocation_note(certificates) -> str:
    """What revoking ``certificates`` publishes: an internal CA republishes its delta CRL at once (its full
    CRL at its next scheduled rebuild), or with delta CRLs off its full CRL at once; an ACME CA is asked to
    revoke and publishes the revocation itself (certmgr has no CRL of it)."""
    local = {bool(c.ca_id) and issuers.backend_for(c.ca).signs_locally for c in certificates}
    if local == {True}:
        if all(c.ca.delta_crl_enabled for c in certificates):
            return (
                "and listed on the issuing CA's delta CRL, which is republished at once (its full CRL lists "
                "it from its next scheduled rebuild)"
            )
        return "and listed on the issuing CA's CRL, which is republished at once"
    if local == {False}:
        return "at the issuing CA, which publishes the revocation itself"
    return "at their CAs: an internal CA republishes its (delta) CRL at once, an ACME CA publishes it itself"


@admin.register(Certificate)
class CertificateAdmin(ReadOnlyPkiAdmin):  # from issuance and import, never edited
    # What an operator scans for (the serial is in the search box and on the detail page): fits 1366 px.
    list_display = [
        "common_name_display",
        "status_badge",
        "ca",
        "subscriber",
        "not_after_display",
        "next_renewal_display",
    ]
    ordering = ["not_after", "id"]  # soonest expiry first: what needs attention
    list_filter = [
        "status",
        DeploymentFilter,
        ExpiringWithinFilter,
        CaFilter,
        SubscriberFilter,
        "key_algorithm",
        "source",
        OrganizationFilter,
    ]
    list_select_related = ["ca", "subscriber", "organization"]
    search_fields = ["common_name"]  # shows the box; get_search_results does the searching
    search_help_text = (
        "A name or part of one (CN or SAN, e.g. example.com), a serial in hex, or a SHA-256 / SHA-1 "
        "fingerprint."
    )
    sortable_by = ["common_name_display", "not_after_display", "next_renewal_display"]
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedCountPaginator
    list_per_page = 50
    actions = ["revoke_certificates", "renew_certificates", "download_pems"]
    change_form_template = "admin/pki/certificate/change_form.html"
    change_list_template = "admin/pki/certificate/change_list.html"

    detail_fieldsets = [
        (
            None,
            {
                "fields": [
                    "common_name",
                    "sans_display",
                    "status_display",
                    "organization",
                    "source",
                    "ca_link",
                    "subscriber_link",
                    "renewal_display",
                    "deployment_display",
                    "private_key_display",
                ]
            },
        ),
        (
            "Validity",
            {"fields": ["not_before_display", "not_after_display", "next_renewal_at", "ari_checked_at"]},
        ),
        (
            "Identity",
            {
                "fields": [
                    "serial_display",
                    "subject_display",
                    "issuer_display",
                    "key_algorithm",
                    "fingerprints_display",
                ]
            },
        ),
        ("Extensions", {"fields": ["details"]}),
        ("PEM", {"fields": ["certificate_pem_display", "chain_display"]}),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("private_key")

    def detail_queryset(self, request):
        return (
            self.get_queryset(request)
            .select_related("ca", "subscriber", "organization", "renewed_from")
            .defer(
                "ca__private_key",
                "ca__certificate_pem",
                "renewed_from__private_key",
                "renewed_from__certificate_pem",
                "renewed_from__chain_pem",
            )
            .annotate(has_private_key=HAS_PRIVATE_KEY)
        )

    def get_changelist(self, request, **kwargs):
        return CertificateChangeList

    def get_search_results(self, request, queryset, search_term):
        """Names by ``matching_name`` (the trigram-indexed names column); serials and fingerprints exactly."""
        term = search_term.strip()
        if not term:
            return queryset, False
        compact = re.sub(r"[\s:]", "", term).lower()
        exact = Q()
        if _HEX.match(compact):
            if len(compact) == 64:
                return queryset.filter(fingerprint_sha256=compact), False
            if len(compact) == 40:
                return queryset.filter(
                    Q(fingerprint_sha1=compact) | Q(serial=compact.lstrip("0") or "0")
                ), False
            exact = Q(serial=compact.lstrip("0") or "0")
        names = queryset.matching_name(term)
        return (names | queryset.filter(exact)) if exact else names, False

    def has_delete_permission(self, request, obj=None):
        return False  # the inventory keeps them: revoke instead

    # --- columns ------------------------------------------------------------------------------------
    @admin.display(description="Common name", ordering="common_name")
    def common_name_display(self, obj):
        # The serial under the name (short; in full on hover): one column where two would not fit 1366 px.
        return format_html(
            '{}<br><code class="cm-quiet" title="{}">{}</code>',
            obj.common_name or "(no CN)",
            obj.serial,
            self.serial_short_text(obj.serial),
        )

    @staticmethod
    def serial_short_text(serial: str) -> str:
        return serial if len(serial) <= 20 else serial[:18] + "…"

    @admin.display(description="Serial")
    def serial_short(self, obj):
        return format_html('<code title="{}">{}</code>', obj.serial, self.serial_short_text(obj.serial))

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.get_status_display(), STATUS_COLORS.get(obj.status, "#555"))

    @admin.display(description="Expires", ordering="not_after")
    def not_after_display(self, obj):
        days = (obj.not_after - timezone.now()).days
        if obj.not_after <= timezone.now():
            css = "cm-expired"
        elif days < 7:
            css = "cm-urgent"
        elif days < 30:
            css = "cm-soon"
        else:
            css = ""
        return format_html('<span class="cm-expiry {}">{}</span>', css, when(obj.not_after, relative=True))

    @admin.display(description="Next renewal", ordering="next_renewal_at")
    def next_renewal_display(self, obj):
        return when(obj.next_renewal_at, relative=True)

    # --- details ------------------------------------------------------------------------------------
    @admin.display(description="Subject alternative names")
    def sans_display(self, obj):
        if not obj.sans:
            return "—"
        return format_html_join(mark_safe("<br>"), "{}", ((name,) for name in obj.sans))

    @admin.display(description="Status")
    def status_display(self, obj):
        badge = self.status_badge(obj)
        if obj.status == Certificate.Status.REVOKED:
            return format_html(
                "{} on {} — reason: {}",
                badge,
                when(obj.revoked_at, empty="?"),
                obj.get_revocation_reason_display() or "unspecified",
            )
        return badge

    @admin.display(description="Issuing CA")
    def ca_link(self, obj):
        return (
            admin_link(obj.ca) if obj.ca_id else format_html("— <span class='small'>{}</span>", obj.issuer_dn)
        )

    @admin.display(description="Subscriber")
    def subscriber_link(self, obj):
        return admin_link(obj.subscriber) if obj.subscriber_id else "—"

    @admin.display(description="Renewals")
    def renewal_display(self, obj):
        renewed_by = Certificate.objects.filter(renewed_from=obj).only("id", "serial").first()
        parts = []
        if obj.renewed_from_id:
            parts.append(
                format_html("renewed from {}", admin_link(obj.renewed_from, obj.renewed_from.serial))
            )
        if renewed_by is not None:
            parts.append(format_html("renewed by {}", admin_link(renewed_by, renewed_by.serial)))
        return format_html_join(mark_safe("<br>"), "{}", ((p,) for p in parts)) if parts else "—"

    @admin.display(description="Deployment")
    def deployment_display(self, obj):
        text = deployment.state_text(obj)
        if obj.deployed_at is not None and obj.deployment_state == Certificate.DeploymentState.DEPLOYED:
            return format_html("{} (the last confirmed it {})", text, datetime_text(obj.deployed_at))
        return text

    @admin.display(description="Private key", boolean=False)
    def private_key_display(self, obj):
        if obj.has_private_key:
            return "held by certmgr (encrypted); operators can export it, audited"
        return "not held (issued from a CSR or imported without its key)"

    @admin.display(description="Serial")
    def serial_display(self, obj):
        return format_html(
            "<code>{}</code><br><code class='small'>{}</code>", obj.serial, colon_hex(obj.serial)
        )

    @admin.display(description="Valid from")
    def not_before_display(self, obj):
        return when(obj.not_before)

    @admin.display(description="Subject")
    def subject_display(self, obj):
        return obj.subject_dn or "— (empty)"

    @admin.display(description="Issuer")
    def issuer_display(self, obj):
        return obj.issuer_dn or "—"

    @admin.display(description="Fingerprints")
    def fingerprints_display(self, obj):
        return format_html(
            "SHA-256 <code>{}</code><br>SHA-1 <code>{}</code>", obj.fingerprint_sha256, obj.fingerprint_sha1
        )

    @admin.display(description="Extensions")
    def details(self, obj):
        return x509_details(obj.certificate_pem)

    @admin.display(description="Certificate (PEM)")
    def certificate_pem_display(self, obj):
        return pem_block(obj.certificate_pem)

    @admin.display(description="Chain (PEM, issuer first)")
    def chain_display(self, obj):
        if not obj.chain_pem:
            return "— (no chain stored)"
        try:
            chain = x509.load_pem_certificates(obj.chain_pem)
        except x509.X509Error:
            return pem_block(obj.chain_pem)
        summary = format_html_join(
            "",
            "<li>{} <span class='small'>(expires {})</span></li>",
            ((c.subject.rfc4514_string(), datetime_text(c.not_valid_after_utc)) for c in chain),
        )
        return format_html('<ol class="pki-list">{}</ol>{}', summary, pem_block(obj.chain_pem))

    def change_form_extra(self, request, obj):
        # Internal CAs revoke here; ACME CAs are asked first (pki.services.revoke).
        revocable = obj.status != Certificate.Status.REVOKED and obj.ca_id is not None
        return {
            **super().change_form_extra(request, obj),
            "can_export_key": self.can_export_key(request, obj),
            "has_private_key": obj.has_private_key,
            "has_chain": bool(obj.chain_pem),
            # A revoked certificate is not renewed (issue a new one from its subscriber instead).
            "can_renew": obj.subscriber_id is not None and obj.status != Certificate.Status.REVOKED,
            "can_revoke": revocable,
            **live_context(obj.subscriber_id),  # its subscriber's renewal, while it runs
            "panels": panels.render("certificate", request, obj),
        }

    # --- revoke -------------------------------------------------------------------------------------
    def _revoke(self, request, certificates, reason) -> None:
        done = []
        for cert in certificates:
            try:
                if self._call(request, services.revoke, cert, reason=reason) is not None:
                    done.append(cert.serial)
            except PermissionDenied as exc:
                self.message_user(request, f"{cert.serial}: {exc}", messages.ERROR)
        if done:
            label = RevocationReason(reason).label.lower()
            self.message_user(
                request,
                f"Revoked {len(done)} certificate(s) ({label}) {revocation_note(certificates)}: "
                + ", ".join(done[:10])
                + (" …" if len(done) > 10 else ""),
                messages.SUCCESS,
            )

    @admin.action(description="Revoke selected certificates…", permissions=["manage"])
    def revoke_certificates(self, request, queryset):
        certificates = list(queryset[: ACTION_LIMIT + 1])
        if len(certificates) > ACTION_LIMIT:
            self.message_user(request, f"Select at most {ACTION_LIMIT} certificates at once.", messages.ERROR)
            return None
        form = pki_forms.RevokeForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            self._revoke(request, certificates, form.cleaned_data["reason"])
            return None
        return self.form_page(
            request,
            title="Revoke certificates",
            form=form,
            submit="Revoke",
            template="admin/pki/certificate/revoke.html",
            submit_danger=True,
            certificates=certificates,
            revocation_note=revocation_note(certificates),
            action_name="revoke_certificates",
            action_checkbox_name=helpers.ACTION_CHECKBOX_NAME,
        )

    @admin.action(description="Renew selected certificates now", permissions=["manage"])
    def renew_certificates(self, request, queryset):
        certificates = list(queryset.select_related("subscriber")[: ACTION_LIMIT + 1])
        if len(certificates) > ACTION_LIMIT:
            self.message_user(request, f"Select at most {ACTION_LIMIT} certificates at once.", messages.ERROR)
            return
        for cert in certificates:
            self._renew(request, cert)

    def _renew(self, request, cert) -> Outcome | None:
        label = cert.common_name or cert.serial
        if cert.subscriber_id is None:
            self.message_user(
                request,
                f"{label}: no subscriber (imported or ACME), nothing to renew from.",
                messages.WARNING,
            )
            return None
        successor = Certificate.objects.filter(renewed_from=cert).only("id", "serial").first()
        if successor is not None:
            self.message_user(
                request,
                format_html(
                    "{}: already renewed by {}; renew that one.",
                    label,
                    admin_link(successor, successor.serial),
                ),
                messages.WARNING,
            )
            return None
        try:
            outcome = self._call(request, services.issue, cert.subscriber, renewal_of=cert)
        except PermissionDenied as exc:
            self.message_user(request, f"{label}: {exc}", messages.ERROR)
            return None
        if outcome is None:
            return None
        if outcome.certificate is None:
            say_pending(self, request, label, outcome)
        else:
            new = outcome.certificate
            new.refresh_from_db(fields=deployment.FIELDS)  # set on commit by the app that deploys it
            self.message_user(
                request,
                format_html(
                    "{}: renewed as {}{}.", label, admin_link(new, new.serial), deployment.suffix(new)
                ),
                messages.SUCCESS,
            )
        return outcome

    @admin.action(description="Download selected certificates (PEM)")
    def download_pems(self, request, queryset):
        pems = queryset.select_related(None).values_list("certificate_pem", flat=True)[: ACTION_LIMIT + 1]
        pems = list(pems)
        if len(pems) > ACTION_LIMIT:
            self.message_user(request, f"Select at most {ACTION_LIMIT} certificates at once.", messages.ERROR)
            return None
        return download("".join(pems), "certificates.pem")

    # --- custom views -------------------------------------------------------------------------------
    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("import/", view(self.import_view), name="pki_certificate_import"),
            path("<int:pk>/download/<str:part>/", view(self.download_view), name="pki_certificate_download"),
            path("<int:pk>/pkcs12/", view(self.pkcs12_view), name="pki_certificate_pkcs12"),
            path("<int:pk>/revoke/", view(self.revoke_view), name="pki_certificate_revoke"),
            path("<int:pk>/renew/", view(self.renew_view), name="pki_certificate_renew"),
            *super().get_urls(),
        ]

    KEY_PARTS = {"key": "private key", "bundle": "certificate, chain and private key"}

    def download_view(self, request, pk, part):
        """cert / der / chain / fullchain for viewers; key / bundle (with the key) for operators, by POST."""
        cert = self._object(request, pk)
        base = filename(cert.common_name, cert.serial)
        if part in self.KEY_PARTS:
            return self._key_download(request, cert, part, base)
        if part == "cert":
            return download(cert.certificate_pem, f"{base}.crt.pem")
        if part == "der":
            der = cx509.load_pem_x509_certificate(cert.certificate_pem.encode()).public_bytes(
                serialization.Encoding.DER
            )
            return download(der, f"{base}.cer", "application/pkix-cert")
        if part == "chain":
            if not cert.chain_pem:
                self.message_user(request, "No chain is stored for this certificate.", messages.WARNING)
                return HttpResponseRedirect(self._change_url(cert))
            return download(cert.chain_pem, f"{base}.chain.pem")
        if part == "fullchain":
            return download(services.bundle_pem(cert), f"{base}.fullchain.pem")
        raise PermissionDenied

    def _key_download(self, request, cert, part, base):
        if not self.can_export_key(request, cert):
            if request.method == "POST":  # let the service refuse and audit the attempt
                self._export(request, cert, part)
            raise PermissionDenied
        form = pki_forms.KeyExportForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            body = self._export(request, cert, part, form.cleaned_data["reason"])
            if body is None:
                return HttpResponseRedirect(self._change_url(cert))
            return download(body, f"{base}.key.pem" if part == "key" else f"{base}.bundle.pem")
        return self.form_page(
            request,
            title=f"Download the {self.KEY_PARTS[part]}",
            form=form,
            obj=cert,
            submit="Download",
            submit_danger=True,
            description="The private key leaves certmgr unencrypted. Confirm, and say why: the reason is "
            "recorded with the download in the audit log.",
        )

    def _export(self, request, cert, part, reason: str = ""):
        if part == "key":
            return self._call(request, services.export_private_key, cert, reason=reason)
        return self._call(request, services.bundle_pem, cert, with_key=True, reason=reason)

    def pkcs12_view(self, request, pk):
        cert = self._object(request, pk)
        if not self.can_export_key(request, cert):
            if request.method == "POST":
                self._call(request, services.export_pkcs12, cert, password="", alias="")
            raise PermissionDenied
        if not cert.has_private_key:
            self.message_user(request, "certmgr holds no private key for this certificate.", messages.ERROR)
            return HttpResponseRedirect(self._change_url(cert))
        form = pki_forms.Pkcs12Form(request.POST or None, initial={"alias": cert.common_name[:64]})
        if request.method == "POST" and form.is_valid():
            try:
                data = services.export_pkcs12(
                    cert,
                    password=form.cleaned_data["password"],
                    alias=form.cleaned_data["alias"],
                    actor=as_actor(request),
                    reason=form.cleaned_data["reason"],
                )
            except errors.PermissionDenied as exc:
                raise PermissionDenied(str(exc)) from exc
            except (errors.ServiceError, ValidationError) as exc:
                apply_service_errors(form, exc)
            else:
                return download(
                    data, f"{filename(cert.common_name, cert.serial)}.p12", "application/x-pkcs12"
                )
        return self.form_page(
            request,
            title="Export as PKCS#12",
            form=form,
            obj=cert,
            submit="Download .p12",
            description="Certificate, chain and private key in one password-protected file (AES-256, "
            "PBKDF2-SHA256). Confirm, and say why: the reason is recorded with the export in the audit log.",
        )

    def revoke_view(self, request, pk):
        cert = self._object(request, pk)
        self._require_manage(request, cert)
        form = pki_forms.RevokeForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            self._revoke(request, [cert], form.cleaned_data["reason"])
            return HttpResponseRedirect(self._change_url(cert))
        return self.form_page(
            request,
            title="Revoke certificate",
            form=form,
            obj=cert,
            submit="Revoke",
            template="admin/pki/certificate/revoke.html",
            submit_danger=True,
            certificates=[cert],
            revocation_note=revocation_note([cert]),
        )

    def renew_view(self, request, pk):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        cert = self._object(request, pk)
        self._require_manage(request, cert)
        outcome = self._renew(request, cert)
        return (
            outcome_redirect(outcome) if outcome is not None else HttpResponseRedirect(self._change_url(cert))
        )

    def import_view(self, request):
        if not self.has_manage_permission(request):
            raise PermissionDenied
        form = pki_forms.CertificateImportForm(
            request.POST or None, request.FILES or None, organizations=self.managed_organizations(request)
        )
        if request.method == "POST" and form.is_valid():
            organization = form.cleaned_data["organization"]
            imported, duplicates, rejected = [], [], []
            for name, text, key in form.cleaned_data["sources"]:
                try:
                    result = services.import_certificates(
                        organization, text, key_pem=key, source_name=name, actor=as_actor(request)
                    )
                except errors.PermissionDenied as exc:
                    raise PermissionDenied(str(exc)) from exc
                except (errors.ServiceError, ValidationError) as exc:
                    rejected.append((name, error_text(exc)))
                    continue
                imported += [
                    (name, c, bool(c.private_key), c.ca.name if c.ca else "") for c in result.imported
                ]
                duplicates += [(name, fp) for fp in result.duplicates]
                rejected += list(result.rejected)
            existing = dict(
                Certificate.objects.filter(
                    organization=organization, fingerprint_sha256__in=[fp for _, fp in duplicates]
                ).values_list("fingerprint_sha256", "pk")
            )
            return self.form_page(
                request,
                title="Import result",
                form=forms.Form(),
                template="admin/pki/certificate/import_result.html",
                imported=imported,
                duplicates=[(name, fp, existing.get(fp)) for name, fp in duplicates],
                rejected=rejected,
            )
        return self.form_page(
            request,
            title="Import certificates",
            form=form,
            submit="Import",
            description="Add existing certificates to the inventory. Each file holds one certificate, "
            "optionally its chain and its private key (kept encrypted, only if it matches). Certificates "
            "of a CA managed here are linked to it.",
        )
