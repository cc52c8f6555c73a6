"""Every /api/v1/ route. Resource paths are kebab-case plurals."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from certmgr.api import views
from dnsproviders.api.views import AppConnectionViewSet

router = DefaultRouter(trailing_slash=True)
router.register("organizations", views.OrganizationViewSet, basename="organization")
router.register("memberships", views.MembershipViewSet, basename="membership")
router.register("tokens", views.ApiTokenViewSet, basename="token")
router.register("audit-events", views.AuditEventViewSet, basename="audit-event")
router.register("app-connections", AppConnectionViewSet, basename="app-connection")

urlpatterns = [path("", include(router.urls))]
