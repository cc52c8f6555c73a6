from django.urls import re_path

from pki import views

urlpatterns = [
    re_path(r"^pki/ca/(?P<pk>\d+)\.(?P<fmt>crl|pem)$", views.crl, name="pki-crl"),
    re_path(r"^pki/ca/(?P<pk>\d+)/delta\.(?P<fmt>crl|pem)$", views.delta_crl, name="pki-delta-crl"),
    re_path(r"^pki/ca/(?P<pk>\d+)/certificate\.(?P<fmt>crt|pem)$", views.ca_certificate, name="pki-ca-cert"),
    # RFC 6960 POST at the base, RFC 5019 GET with the base64 request after it (may contain "/").
    re_path(r"^ocsp/(?P<pk>\d+)/(?P<encoded>.*)$", views.ocsp_responder, name="pki-ocsp"),
]
