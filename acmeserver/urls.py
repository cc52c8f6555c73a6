"""``/acme/<organization slug>/<profile slug>/``: one ACME directory per profile (acmeserver.views)."""

from django.urls import path

from acmeserver import views

app_name = "acmeserver"
P = "acme/<slug:organization>/<slug:profile>/"

urlpatterns = [
    path(f"{P}directory", views.directory, name="directory"),
    path(f"{P}new-nonce", views.new_nonce, name="new-nonce"),
    path(f"{P}new-account", views.new_account, name="new-account"),
    path(f"{P}new-order", views.new_order, name="new-order"),
    path(f"{P}revoke-cert", views.revoke_cert, name="revoke-cert"),
    path(f"{P}key-change", views.key_change, name="key-change"),
    path(f"{P}renewal-info", views.renewal_info, {"cert_id": ""}, name="renewal-info"),
    path(f"{P}renewal-info/<str:cert_id>", views.renewal_info, name="renewal-info-of"),
    path(f"{P}acct/<str:public_id>", views.account, name="account"),
    path(f"{P}acct/<str:public_id>/orders", views.account_orders, name="account-orders"),
    path(f"{P}order/<str:public_id>", views.order, name="order"),
    path(f"{P}order/<str:public_id>/finalize", views.finalize, name="finalize"),
    path(f"{P}order/<str:public_id>/certificate", views.certificate, name="certificate"),
    path(f"{P}authz/<str:public_id>", views.authorization, name="authz"),
    path(f"{P}chall/<str:public_id>", views.challenge, name="challenge"),
]
