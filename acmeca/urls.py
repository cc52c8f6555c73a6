from django.urls import re_path

from acmeca import views

urlpatterns = [
    re_path(
        r"^\.well-known/acme-challenge/(?P<token>[A-Za-z0-9_-]{1,255})$",
        views.http01_challenge,
        name="acme-http01",
    ),
]
