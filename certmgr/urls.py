from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from certmgr import two_factor_views
from certmgr.api.exceptions import api_not_found
from certmgr.health import healthz
from certmgr.invitation_views import invitation_page
from reports.metrics import metrics_view

urlpatterns = [
    path("admin/two-factor/", two_factor_views.manage_view, name="two-factor"),
    path("admin/two-factor/verify/", two_factor_views.verify_view, name="two-factor-verify"),
    path("admin/two-factor/set-up/", two_factor_views.enroll_view, name="two-factor-enroll"),
    path("admin/", admin.site.urls),
    path("", include("certmgr.sso_login")),  # /sso/login/ and /sso/callback/: 404 unless SSO is configured
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/", include("certmgr.api.urls")),
    path("api/<path:rest>", api_not_found),
    path("invite/<str:token>/", invitation_page, name="invitation"),
    path("", include("pki.urls")),
    path("", include("acmeca.urls")),
    path("", include("acmeserver.urls")),
    path("metrics", metrics_view, name="metrics"),
    path("", RedirectView.as_view(url="/admin/dashboard/"), name="home"),  # the product's front page
    path("healthz", healthz, name="healthz"),
    # Browsers ask for /favicon.ico on pages that name no icon (the Swagger UI, a PEM shown raw).
    path("favicon.ico", RedirectView.as_view(url=f"/{settings.STATIC_URL.strip('/')}/certmgr/favicon.svg")),
]
