"""ACME vendor presets: every vendor of the seeds, EAB where the CA demands it, typed URLs only for custom."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from acmeca.vendors import PRESETS, Vendor, directory_url_for, preset


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
