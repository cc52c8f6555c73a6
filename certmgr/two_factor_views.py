"""The admin's two-factor pages: the code after the password, setting up an authenticator app (a QR code
rendered server-side as an SVG data: image, no script), and the user's own page to see or remove it."""

from __future__ import annotations

import segno
from django import forms
from django.contrib import admin, messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters

from certmgr import two_factor
from certmgr.admin_base import apply_service_errors
from certmgr.errors import ServiceError


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Code",
        max_length=12,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True, "size": 8}
        ),
        help_text="The 6-digit code your authenticator app shows now.",
    )


def _next(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return reverse("admin:index")


def _page(request: HttpRequest, template: str, title: str, *, step: bool, **context) -> TemplateResponse:
    base = admin.site.each_context(request)
    if step:  # half signed in: no menu of what lies behind the second step
        base.update(available_apps=[], is_nav_sidebar_enabled=False, has_permission=False)
    return TemplateResponse(
        request,
        f"admin/certmgr/two_factor/{template}",
        {**base, "title": title, "next": _next(request), "step": step, **context},
    )


def _signed_in(view):
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not (request.user.is_active and request.user.is_staff):
            return redirect_to_login(request.get_full_path(), reverse("admin:login"))
        return view(request, *args, **kwargs)

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return never_cache(csrf_protect(sensitive_post_parameters("code")(wrapped)))


def _qr_data_uri(uri: str) -> str:
    return segno.make(uri, error="m").svg_data_uri(scale=5, border=2)


@_signed_in
def verify_view(request: HttpRequest) -> HttpResponse:
    """The second step of a login: a code from the user's authenticator app."""
    if two_factor.pending(request) != "verify":
        return HttpResponseRedirect(_next(request))
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            two_factor.verify(request, form.cleaned_data["code"])
        except two_factor.LockedOut:
            return HttpResponse(status=429)  # AxesMiddleware replaces it with the lockout page
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            return HttpResponseRedirect(_next(request))
    return _page(request, "verify.html", "Two-factor authentication", step=True, form=form)


@_signed_in
def enroll_view(request: HttpRequest) -> HttpResponse:
    """Set up an authenticator app: scan the QR code (or type the key), then confirm with a code."""
    step = two_factor.pending(request)
    if step == "verify":
        return HttpResponseRedirect(f"{reverse('two-factor-verify')}?next={reverse('two-factor-enroll')}")
    form = CodeForm(request.POST or None)
    enrollment = None
    if request.method == "POST":
        if form.is_valid():
            try:
                two_factor.confirm_enrollment(request, form.cleaned_data["code"])
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, "Two-factor authentication is on: sign-ins now ask for a code.")
                return HttpResponseRedirect(_next(request))
        # a wrong code: the same key again, so the app already set up can be used
        enrollment = two_factor.enrollment_in_progress(request.user)
    if enrollment is None:
        try:
            enrollment = two_factor.start_enrollment(request.user)
        except ServiceError as exc:
            messages.info(request, exc.message)
            return HttpResponseRedirect(reverse("two-factor"))
    return _page(
        request,
        "enroll.html",
        "Set up two-factor authentication",
        step=step == "enroll",
        form=form,
        required=step == "enroll",
        enrollment=enrollment,
        qr_code=_qr_data_uri(enrollment.uri),
    )


@_signed_in
def manage_view(request: HttpRequest) -> HttpResponse:
    """The user's own two-factor page: the device in use, and removing it (with a current code)."""
    device = two_factor.device_of(request.user)
    form = CodeForm(request.POST or None)
    if request.method == "POST" and device is not None and form.is_valid():
        try:
            two_factor.remove_device(request, form.cleaned_data["code"])
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, "Your authenticator app was removed.")
            return HttpResponseRedirect(reverse("two-factor"))
    return _page(
        request,
        "manage.html",
        "Two-factor authentication",
        step=False,
        device=device,
        required=two_factor.required_for(request.user),
        form=form if device is not None else None,
    )
