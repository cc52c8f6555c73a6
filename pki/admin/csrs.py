"""CSRs: generate, upload, download, issue from one."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.urls import path

from certmgr import errors
from certmgr.actors import as_actor
from certmgr.admin_base import (
    OrganizationFilter,
    apply_service_errors,
    download,
    filename,
)
from certmgr.permissions import Action
from pki import forms as pki_forms
from pki import services
from pki.admin.base import ReadOnlyPkiAdmin
from pki.admin.outcomes import outcome_redirect, say_pending
from pki.admin.rendering import pem_block, short_list
from pki.models import (
    CertificateRequest,
    Subscriber,
)
from pki.querysets import HAS_PRIVATE_KEY


# --- CSRs ----------------------------------------------------------------------------------------------
@admin.register(CertificateRequest)
class CertificateRequestAdmin(ReadOnlyPkiAdmin):  # added by "Generate CSR" and "Upload CSR"
    list_display = ["name", "common_name", "san_summary", "key_algorithm", "source", "key_held", "created_at"]
    list_filter = ["source", "key_algorithm", OrganizationFilter]
    search_fields = ["name", "common_name"]
    list_select_related = ["organization"]
    change_form_template = "admin/pki/certificaterequest/change_form.html"
    change_list_template = "admin/pki/certificaterequest/change_list.html"
    detail_fields = [
        "name",
        "organization",
        "source",
        "common_name",
        "san_summary",
        "subject_dn",
        "key_algorithm",
        "key_held",
        "created_at",
        "csr_pem_display",
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("private_key").annotate(has_private_key=HAS_PRIVATE_KEY)

    @admin.display(description="SANs")
    def san_summary(self, obj):
        return short_list(obj.sans, limit=4) if obj.sans else "—"

    @admin.display(description="Key held by certmgr", boolean=True)
    def key_held(self, obj):
        return obj.has_private_key

    @admin.display(description="CSR (PEM)")
    def csr_pem_display(self, obj):
        return pem_block(obj.csr_pem)

    def remove(self, request, obj):
        services.delete_object(obj, actor=as_actor(request))

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("generate/", view(self.generate_view), name="pki_certificaterequest_generate"),
            path("upload/", view(self.upload_view), name="pki_certificaterequest_upload"),
            path("<int:pk>/download/", view(self.download_view), name="pki_certificaterequest_download"),
            path("<int:pk>/issue/", view(self.issue_view), name="pki_certificaterequest_issue"),
            *super().get_urls(),
        ]

    def _store(self, request, form, fn, **kwargs):
        try:
            csr = fn(
                form.cleaned_data["organization"],
                name=form.cleaned_data["name"],
                actor=as_actor(request),
                **kwargs,
            )
        except errors.PermissionDenied as exc:
            raise PermissionDenied(str(exc)) from exc
        except (errors.ServiceError, ValidationError) as exc:
            apply_service_errors(form, exc)
            return None
        self.message_user(request, f"CSR {csr.name} stored.", messages.SUCCESS)
        return HttpResponseRedirect(self._change_url(csr))

    def generate_view(self, request):
        if not self.has_manage_permission(request):
            raise PermissionDenied
        form = pki_forms.CsrGenerateForm(
            request.POST or None, organizations=self.managed_organizations(request)
        )
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            response = self._store(
                request,
                form,
                services.generate_csr,
                common_name=(data.get("common_name") or "").strip(),
                sans=data.get("sans") or [],
                subject=form.subject_dict(),
                key_algorithm=data["key_algorithm"],
            )
            if response is not None:
                return response
        return self.form_page(
            request,
            title="Generate a CSR",
            form=form,
            submit="Generate",
            description="certmgr makes the key pair and keeps the key encrypted; a certificate issued from "
            "this CSR here carries the key along. Give the CSR to any CA, or issue from it below.",
        )

    def upload_view(self, request):
        if not self.has_manage_permission(request):
            raise PermissionDenied
        form = pki_forms.CsrUploadForm(
            request.POST or None, request.FILES or None, organizations=self.managed_organizations(request)
        )
        if request.method == "POST" and form.is_valid():
            response = self._store(request, form, services.upload_csr, csr_pem=form.cleaned_data["csr_data"])
            if response is not None:
                return response
        return self.form_page(request, title="Upload a CSR", form=form, submit="Upload")

    def download_view(self, request, pk):
        csr = self._object(request, pk)
        return download(csr.csr_pem, f"{filename(csr.name, f'csr-{csr.pk}')}.csr")

    def issue_view(self, request, pk):
        csr = self._object(request, pk)
        self._require_manage(request, csr)
        subscribers = Subscriber.objects.restrict(request, Action.MANAGE).filter(
            organization_id=csr.organization_id
        )
        form = pki_forms.IssueFromStoredCsrForm(
            request.POST or None, subscribers=subscribers.order_by("name")
        )
        if request.method == "POST" and form.is_valid():
            try:
                outcome = services.issue_from_csr(
                    csr, form.cleaned_data["subscriber"], actor=as_actor(request)
                )
            except errors.PermissionDenied as exc:
                raise PermissionDenied(str(exc)) from exc
            except (errors.ServiceError, ValidationError) as exc:
                apply_service_errors(form, exc)  # shown once: on the form, not also as a message
            else:
                if outcome.certificate is None:
                    say_pending(self, request, f"CSR {csr.name}", outcome)
                else:
                    self.message_user(
                        request,
                        f"Issued certificate {outcome.certificate.serial} from CSR {csr.name}.",
                        messages.SUCCESS,
                    )
                return outcome_redirect(outcome)
        return self.form_page(
            request, title="Issue from this CSR", form=form, obj=csr, submit="Issue certificate"
        )
