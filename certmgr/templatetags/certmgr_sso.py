"""``{% sso_enabled as flag %}``: whether the admin login page offers "Sign in with SSO"."""

from django import template

from certmgr import sso

register = template.Library()


@register.simple_tag
def sso_enabled() -> bool:
    return sso.enabled()
