"""The provider's claims: the standard profile from the Django user, and a ``groups`` scope whose claim
lists the names of the user's Django groups (as Keycloak, Authentik or Dex send them)."""

from django.utils.translation import gettext_lazy as _
from oidc_provider.lib.claims import ScopeClaims


def userinfo(claims, user):
    claims.update(
        preferred_username=user.username,
        email=user.email,
        email_verified=True,
        given_name=user.first_name,
        family_name=user.last_name,
        name=user.get_full_name(),
    )
    return claims


class GroupsScopeClaims(ScopeClaims):
    info_groups = (_("Groups"), _("The groups you are in."))

    def scope_groups(self):
        return {"groups": sorted(self.user.groups.values_list("name", flat=True))}
