"""The page an invitation link opens: sign in and accept, or create an account under a free user name."""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect

from certmgr import invitations
from certmgr.errors import ServiceError


class NewAccountForm(forms.Form):
    username = forms.CharField(max_length=150, help_text="Letters, digits and @/./+/-/_ only.")
    password = forms.CharField(widget=forms.PasswordInput, strip=False)
    password_again = forms.CharField(widget=forms.PasswordInput, strip=False, label="Password (again)")

    def clean(self):
        data = super().clean() or {}
        if data.get("password") and data.get("password") != data.get("password_again"):
            self.add_error("password_again", "The two passwords differ.")
        return data


def _page(request, context, status=200):
    return TemplateResponse(
        request,
        "certmgr/invitation.html",
        # No navigation sidebar: a newcomer would see "You don't have permission to view or edit anything."
        {
            **admin.site.each_context(request),
            "title": "Invitation",
            "is_nav_sidebar_enabled": False,
            **context,
        },
        status=status,
    )


@never_cache
@csrf_protect
def invitation_page(request, token: str):
    try:
        invitation = invitations.pending(token)
    except ServiceError as exc:
        return _page(request, {"invalid": exc.message}, status=404)
    form = NewAccountForm()
    login_url = "/admin/login/?" + urlencode({"next": request.path})
    if request.method == "POST":
        try:
            if request.POST.get("action") == "accept" and request.user.is_authenticated:
                membership = invitations.accept(token, request.user)
                messages.success(request, f"You joined {membership.organization.name}.")
                return HttpResponseRedirect("/admin/")
            if request.POST.get("action") == "create" and not request.user.is_authenticated:
                form = NewAccountForm(request.POST)
                if form.is_valid():
                    data = form.cleaned_data
                    invitations.accept_with_new_account(
                        token, username=data["username"], password=data["password"]
                    )
                    messages.success(
                        request,
                        f"Account {data['username']} created: sign in to {invitation.organization.name}.",
                    )
                    return HttpResponseRedirect("/admin/login/?next=/admin/")
        except ValidationError as exc:
            for name, errors in exc.message_dict.items():
                form.add_error(name if name in form.fields else None, errors)
        except ServiceError as exc:
            if exc.field and exc.field in form.fields:
                form.add_error(exc.field, exc.message)
            else:
                return _page(request, {"invalid": exc.message}, status=exc.status)
    return _page(request, {"invitation": invitation, "form": form, "login_url": login_url})
