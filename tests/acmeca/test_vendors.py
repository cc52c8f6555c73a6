"""ACME vendor presets: every vendor of the seeds, EAB where the CA demands it, typed URLs only for custom."""

from __future__ import annotations

from datetime import date
from urllib.parse import urlsplit

import pytest

from acmeca.vendors import PRESETS, Vendor, current, directory_url_for, preset


def test_every_vendor_has_a_preset_with_an_https_directory():
    assert set(PRESETS) == set(Vendor)
    for vendor, p in PRESETS.items():
        if vendor is Vendor.CUSTOM:
            assert p.directory_url == ""
        else:
            assert urlsplit(p.directory_url).scheme == "https", vendor


@pytest.mark.parametrize(
    ("vendor", "eab"),
    [
        ("letsencrypt", False),
        ("zerossl", True),
        ("google", True),
        ("google-staging", True),
        ("sslcom-rsa", True),
        ("sslcom-ecc", True),
        ("digicert", True),
        ("buypass", False),
        ("letsencrypt-staging", False),
    ],
)
def test_eab_requirements(vendor, eab):
    assert preset(vendor).eab_required is eab


def test_directory_url_resolution():
    assert directory_url_for("letsencrypt") == "https://acme-v02.api.letsencrypt.org/directory"
    assert directory_url_for("letsencrypt", "https://acme-v02.api.letsencrypt.org/directory/").startswith(
        "https"
    )
    assert directory_url_for("custom", "https://ca.internal:9000/acme/acme/directory").endswith("/directory")
    with pytest.raises(ValueError, match="needs its directory URL"):
        directory_url_for("custom")
    with pytest.raises(ValueError, match="choose 'custom'"):
        directory_url_for("letsencrypt", "https://evil.example/directory")
    with pytest.raises(ValueError, match="unknown ACME vendor"):
        preset("comodo")


def test_notes_are_plain_text():
    # The form shows a note as is: markup (Markdown backticks) would show as stray characters.
    for vendor, p in PRESETS.items():
        assert not set(p.note) & set("`*_<>[]"), (vendor, p.note)


def test_buypass_is_retired_and_refused_for_a_new_ca():
    for vendor in (Vendor.BUYPASS, Vendor.BUYPASS_STAGING):
        p = preset(vendor)
        assert p.retired == date(2025, 10, 31)
        assert p.display_label.endswith("(retired 2025-10-31)")
        with pytest.raises(ValueError, match="stopped issuing certificates on 2025-10-31"):
            current(vendor)
    assert current("letsencrypt").retired is None


@pytest.mark.django_db
def test_registering_a_ca_at_a_retired_vendor_is_refused_on_the_vendor_field(tenant):
    from django.core.exceptions import ValidationError

    from acmeca.services import create_acme_ca
    from pki.models import CertificateAuthority

    with pytest.raises(ValidationError) as refused:
        create_acme_ca(
            tenant.organization,
            name="Buypass",
            vendor="buypass",
            email="pki@acme.test",
            actor=tenant.admin.user,
        )
    assert "stopped issuing" in " ".join(refused.value.message_dict["vendor"])
    assert not CertificateAuthority.objects.filter(name="Buypass").exists()
