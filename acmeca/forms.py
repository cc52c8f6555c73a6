"""Admin forms of external ACME CAs and accounts.

The forms shape input only: the vendor rules (directory URL per preset, EAB when the CA needs it), the
registration at the CA and every other check live in ``acmeca.services``, whose errors the admin puts back
on these fields. The EAB HMAC key is write-only: never rendered back, and left empty on an edit it is kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms

from acmeca import vendors
from acmeca.models import ACCOUNT_KEY_KINDS, AcmeSettings, ChallengeType
from acmeca.services import SETTINGS_FIELDS
from certmgr.admin_base import model_choice_field
from certmgr.org_choices import OrganizationChoicesMixin, single_organization
from dnsproviders.models import AppConnection
from pki.forms import pem_textarea

if TYPE_CHECKING:
    from certmgr.models import Organization
    from pki.models import CertificateAuthority, CertificateRequest


def vendor_choices() -> list[tuple[str, str]]:
    """Each preset's label, saying on the choice itself when the CA needs external account binding."""
    return [
        (p.vendor.value, p.display_label + (" — EAB required" if p.eab_required else ""))
        for p in vendors.PRESETS.values()
    ]


def preset_rows() -> list[dict[str, Any]]:
    """What the form's preset table (and its script) shows for each vendor."""
    return [
        {
            "vendor": p.vendor.value,
            "label": p.display_label,
            "directory_url": p.directory_url,
            "eab_required": p.eab_required,
            "note": p.note,
        }
        for p in vendors.PRESETS.values()
    ]


class AcmeCaForm(OrganizationChoicesMixin, forms.Form):
    """Register (``instance`` None) or edit an ACME CA. ``organizations`` only on register."""

    organization_dependent = {"dns_connection": "DNS connection"}

    organization: forms.ModelChoiceField[Organization] = forms.ModelChoiceField(
        queryset=None,
        empty_label="— choose the organization —",
        help_text="The organization the CA belongs to; the DNS connections below are this organization's.",
    )
    name = forms.CharField(
        max_length=100, help_text="How the CA is called in certmgr (subscribers choose it by this name)."
    )
    vendor = forms.ChoiceField(
        label="Vendor",
        choices=vendor_choices,
        initial=vendors.Vendor.LETSENCRYPT.value,
        help_text="A preset fills the directory URL; choose “custom” for step-ca, Vault, Pebble or another "
        "ACME server.",
    )
    directory_url = forms.CharField(
        label="Directory URL",
        max_length=500,
        required=False,
        help_text="Filled from the preset; type it for a custom ACME server.",
    )
    email = forms.EmailField(
        label="Account email",
        required=False,
        help_text="The CA sends expiry and policy notices here.",
    )
    eab_kid = forms.CharField(
        label="EAB key id",
        max_length=200,
        required=False,
        help_text="External account binding, from your account at the CA (required by the vendors marked "
        "“EAB required”).",
    )
    eab_hmac_key = forms.CharField(
        label="EAB HMAC key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted and never shown again.",
    )
    dns_connection: forms.ModelChoiceField[AppConnection] = forms.ModelChoiceField(
        label="DNS app connection",
        queryset=None,
        required=False,
        help_text="Writes the _acme-challenge TXT records for dns-01.",
    )
    hosted_zone_id = forms.CharField(
        label="Hosted zone id",
        max_length=255,
        required=False,
        help_text="e.g. a Route53 hosted zone id; empty: found from the domain.",
    )
    challenge_type = forms.ChoiceField(
        choices=ChallengeType.choices,
        initial=ChallengeType.DNS_01,
        help_text="dns-01 proves control by a TXT record (needed for wildcards); http-01 by certmgr's own "
        "/.well-known/acme-challenge/ responder.",
    )
    profile = forms.CharField(
        label="ACME profile", max_length=64, required=False, help_text="Profile name, if the CA offers them."
    )
    caa_identifiers = forms.CharField(
        label="CAA identifiers",
        max_length=500,
        required=False,
        help_text="The CA's CAA issuer domains, comma-separated; empty: the preset's (letsencrypt.org, "
        "pki.goog, ...). Before each order, names whose CAA records forbid this CA fail at once.",
    )
    preferred_chain = forms.CharField(
        max_length=255, required=False, help_text="Issuer common name of the alternate chain to prefer."
    )
    tls_ca_bundle = forms.CharField(
        label="TLS trust bundle (PEM)",
        required=False,
        widget=pem_textarea(6),
        help_text="The CA certificate(s) of the ACME server's HTTPS certificate, for private ACME servers "
        "whose certificate is not publicly trusted. Empty: the system's trust store.",
    )
    direct_issuance = forms.BooleanField(
        label="Enable direct issuance",
        required=False,
        help_text="Allow certificates by names alone, without a subscriber.",
    )
    reregister_automatically = forms.BooleanField(
        label="Re-register automatically when the CA forgets the account",
        required=False,
        initial=True,
        help_text="When the CA answers accountDoesNotExist (a CA reset, a staging wipe), register a new "
        "account with the same key and retry the failed order on it. Off: the account is marked invalid "
        "and waits for you to register it again.",
    )
    propagation_timeout = forms.IntegerField(
        initial=180, help_text="Seconds to wait for the TXT records to reach every name server (5 to 3600)."
    )
    propagation_interval = forms.FloatField(
        initial=1.0, help_text="Seconds between propagation checks (0.1 to 60)."
    )
    account_key_kind = forms.ChoiceField(
        label="Account key type",
        choices=ACCOUNT_KEY_KINDS,
        initial="ec-p256",
        help_text="The ACME account's key, made here and stored encrypted.",
    )

    def __init__(
        self,
        *args: Any,
        connections,
        organizations=None,
        instance: AcmeSettings | None = None,
        **kwargs: Any,
    ) -> None:
        self.instance = instance
        if instance is not None:
            kwargs.setdefault("initial", self.initial_from(instance))
        super().__init__(*args, **kwargs)
        model_choice_field(self.fields, "dns_connection").queryset = connections
        if instance is None:
            model_choice_field(self.fields, "organization").queryset = organizations
            only = single_organization(organizations)
            if only is not None:  # one to choose from: preselected; several: the user chooses
                self.fields["organization"].initial = only.pk
                model_choice_field(self.fields, "organization").empty_label = None
        else:
            # Editing: the organization is the CA's, the account key is changed by a rollover on the
            # account.
            del self.fields["organization"], self.fields["account_key_kind"]
        if not self.is_bound:
            self.narrow_to_organization()  # the querysets are the request's, set above
        if instance is None:
            return
        if instance.eab_hmac_key:
            hmac_field = self.fields["eab_hmac_key"]
            hmac_field.help_text = (
                "Stored (hidden); leave empty to keep it. Emptying the key id removes both."
            )

    def selected_organization_id(self) -> int | None:
        if self.instance is not None:
            return self.instance.ca.organization_id
        return super().selected_organization_id()

    @staticmethod
    def initial_from(row: AcmeSettings) -> dict[str, Any]:
        initial = {
            field: getattr(row, field)
            for field in SETTINGS_FIELDS
            if field not in ("eab_hmac_key", "dns_connection")  # the key is never shown back
        }
        initial["name"] = row.ca.name
        initial["dns_connection"] = row.dns_connection_id
        return initial

    def settings_values(self) -> dict[str, Any]:
        """The cleaned input as ``create_acme_ca`` / ``update_acme_ca`` keywords."""
        data = self.cleaned_data
        values = {field: data.get(field) for field in SETTINGS_FIELDS if field != "eab_hmac_key"}
        for field in (
            "directory_url", "email", "eab_kid", "hosted_zone_id", "profile", "caa_identifiers",
            "preferred_chain",
        ):  # fmt: skip
            values[field] = (values[field] or "").strip()
        values["tls_ca_bundle"] = values["tls_ca_bundle"] or ""
        hmac = data.get("eab_hmac_key") or ""
        if self.instance is None or hmac:
            values["eab_hmac_key"] = hmac
        elif not values["eab_kid"]:
            values["eab_hmac_key"] = ""  # no key id: the stored HMAC goes with it
        return values


class RolloverForm(forms.Form):
    key_kind = forms.ChoiceField(
        label="New account key type",
        choices=ACCOUNT_KEY_KINDS,
        help_text="A new key is made here; the CA switches the account to it (RFC 8555 key change) and "
        "the old key is forgotten.",
    )


def connection_label(connection: AppConnection, *, with_organization: bool) -> str:
    text = f"{connection.name} ({connection.get_kind_display()})"
    if connection.last_test_ok is False:
        text += " — last test failed"
    return f"{text} — {connection.organization.name}" if with_organization else text


def failed_test_warning(connection: AppConnection) -> str:
    """What the form says about a chosen connection whose last test failed (saving is still allowed)."""
    when = connection.last_tested_at.strftime("%Y-%m-%d %H:%M:%S UTC") if connection.last_tested_at else ""
    reason = connection.last_test_message or "no reason recorded"
    return (
        f"The DNS connection {connection.name} failed its last test{' on ' + when if when else ''}: "
        f"{reason} Orders that use it will fail until it works; test it again on its page."
    )


class DirectOrderForm(forms.Form):
    """Order a certificate from an ACME CA that allows direct issuance: by names, or from a stored CSR."""

    ca: forms.ModelChoiceField[CertificateAuthority] = forms.ModelChoiceField(
        label="ACME CA",
        queryset=None,
        empty_label=None,
        help_text="Only ACME CAs with direct issuance on are offered.",
    )
    csr: forms.ModelChoiceField[CertificateRequest] = forms.ModelChoiceField(
        label="CSR",
        queryset=None,
        required=False,
        help_text="A stored CSR (Certificates > CSRs); its names are used when the names below are empty. "
        "A CSR generated in certmgr passes its key on to the certificate.",
    )
    names = forms.CharField(
        label="Domain names",
        required=False,
        widget=pem_textarea(4),
        help_text="One per line (or comma-separated); a wildcard needs dns-01.",
    )
    key_algorithm = forms.ChoiceField(
        label="Key type",
        choices=[c for c in ACCOUNT_KEY_KINDS],
        initial="ec-p256",
        help_text="For a key made here (not used with a CSR).",
    )

    def __init__(self, *args: Any, cas, csrs, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        model_choice_field(self.fields, "ca").queryset = cas
        model_choice_field(self.fields, "csr").queryset = csrs

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        names = [n.strip() for n in (data.get("names") or "").replace(",", "\n").splitlines() if n.strip()]
        csr, ca = data.get("csr"), data.get("ca")
        if csr is not None and ca is not None and csr.organization_id != ca.organization_id:
            self.add_error("csr", "Choose a CSR of the CA's organization.")
        if not names and csr is not None:
            names = [n for n in [csr.common_name, *csr.sans] if n]
        if not names:
            self.add_error("names", "Give the names, or choose a CSR.")
        data["name_list"] = list(dict.fromkeys(names))
        return data
