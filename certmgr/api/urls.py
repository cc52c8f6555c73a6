"""Every /api/v1/ route. Resource paths are kebab-case plurals."""

from django.urls import URLPattern, URLResolver, include, path
from rest_framework.routers import DefaultRouter

from acmeca.api import views as acme_views
from acmeserver.api import views as acme_server_views
from certmgr.api import views
from dnsproviders.api.views import AppConnectionViewSet
from pki.api import views as pki_views
from pki.api.alerts import register as register_alerts
from syncs.api.views import register as register_syncs

router = DefaultRouter(trailing_slash=True)
router.register("organizations", views.OrganizationViewSet, basename="organization")
router.register("memberships", views.MembershipViewSet, basename="membership")
router.register("invitations", views.InvitationViewSet, basename="invitation")
router.register("tokens", views.ApiTokenViewSet, basename="token")
router.register("audit-events", views.AuditEventViewSet, basename="audit-event")
router.register("app-connections", AppConnectionViewSet, basename="app-connection")
router.register("cas", pki_views.CertificateAuthorityViewSet, basename="ca")
router.register("policies", pki_views.PolicyViewSet, basename="policy")
router.register("subscribers", pki_views.SubscriberViewSet, basename="subscriber")
router.register("csrs", pki_views.CertificateRequestViewSet, basename="csr")
router.register("certificates", pki_views.CertificateViewSet, basename="certificate")
router.register("acme-accounts", acme_views.AcmeAccountViewSet, basename="acme-account")
router.register("acme-orders", acme_views.AcmeOrderViewSet, basename="acme-order")
router.register("acme-challenges", acme_views.AcmeChallengeViewSet, basename="acme-challenge")
router.register("acme-profiles", acme_server_views.AcmeProfileViewSet, basename="acme-profile")
router.register(
    "acme-server-accounts", acme_server_views.AcmeServerAccountViewSet, basename="acme-server-account"
)
router.register("acme-server-orders", acme_server_views.AcmeServerOrderViewSet, basename="acme-server-order")
router.register("acme-eab-keys", acme_server_views.AcmeEabKeyViewSet, basename="acme-eab-key")
router.register(
    "acme-early-renewals", acme_server_views.AcmeEarlyRenewalViewSet, basename="acme-early-renewal"
)
router.register(
    "acme-order-profiles", acme_server_views.AcmeOrderProfileViewSet, basename="acme-order-profile"
)
register_alerts(router)  # alert-channels, alert-rules, alert-deliveries
register_syncs(router)  # sync-destinations, sync-rules, sync-runs

urlpatterns: list[URLPattern | URLResolver] = [path("", include(router.urls))]
# The seed API's paths, exactly as its scripts call them (no trailing slash).
urlpatterns += [
    path("pki/certificates/<str:serial>/revoke", pki_views.SeedRevokeView.as_view(), name="pki-seed-revoke"),
    path("pki/ca/<int:pk>/crls", pki_views.SeedCaCrlsView.as_view(), name="pki-seed-ca-crls"),
]
