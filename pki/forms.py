"""Admin forms of the PKI: CAs, policies, subscribers, CSRs, revocation, PKCS#12 and imports.

The forms only shape and check input; every state change goes through ``pki.services``. Lists (name
patterns, SANs, extra EKU OIDs) are typed one per line or comma-separated; usages and key algorithms are
checkboxes. Fields that receive secrets (private keys, PKCS#12 passwords) never render a value back.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from django import forms
from django.core.exceptions import ValidationError

from certmgr.admin_base import model_choice_field
from certmgr.org_choices import SCRIPT as ORGANIZATION_SCRIPT
from certmgr.org_choices import OrganizationChoicesMixin, single_organization
from pki import issuers, services, x509
from pki.models import (
    KEY_ALGORITHMS,
    CertificateAuthority,
    Policy,
    RevocationReason,
    Subscriber,
)

SUBJECT_FIELDS = (
    ("organization", "Organization (O)", 64),
    ("organizational_unit", "Organizational unit (OU)", 64),
    ("country", "Country (C)", 2),
    ("state", "State or province (ST)", 128),
    ("locality", "Locality (L)", 128),
)
_LABELS = {"crl_sign": "CRL sign", "key_cert_sign": "Certificate sign", "ocsp_signing": "OCSP signing"}


def _label(name: str) -> str:
    return _LABELS.get(name) or name.replace("_", " ").capitalize()


KEY_USAGE_CHOICES = [(name, _label(name)) for name in x509.KEY_USAGE_NAMES]
EKU_CHOICES = [(name, _label(name)) for name in x509.EXTENDED_KEY_USAGES]
SAN_TYPE_CHOICES = [
    ("dns", "DNS names"),
    ("ip", "IP addresses"),
    ("email", "Email addresses"),
    ("uri", "URIs"),
]
INTERNAL_KINDS = [
    (CertificateAuthority.Kind.INTERNAL_ROOT.value, CertificateAuthority.Kind.INTERNAL_ROOT.label),
    (
        CertificateAuthority.Kind.INTERNAL_INTERMEDIATE.value,
        CertificateAuthority.Kind.INTERNAL_INTERMEDIATE.label,
    ),
]
MAX_UPLOAD_BYTES = 1024 * 1024
MAX_UPLOAD_FILES = 100

_PRIVATE_KEY_RE = re.compile(
    r"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----.*?-----END \1-----", re.DOTALL
)


# --- building blocks -----------------------------------------------------------------------------------
class ListTextField(forms.CharField):
    """A list typed one item per line or comma-separated; shown back one per line.

    With ``whole_line_prefix`` (``~`` for regular expressions), a line starting with it is one item, commas
    and all.
    """

    def __init__(self, *, whole_line_prefix: str | None = None, split_spaces: bool = False, **kwargs):
        self.whole_line_prefix = whole_line_prefix
        self.split_spaces = split_spaces
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", pem_textarea(4, cols=60))
        super().__init__(strip=False, **kwargs)

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return "\n".join(str(v) for v in value)
        return value

    def to_python(self, value):
        if isinstance(value, list | tuple):
            return [str(v) for v in value]
        items: list[str] = []
        for line in str(value or "").splitlines():
            line = line.strip()
            if not line:
                continue
            if self.whole_line_prefix and line.startswith(self.whole_line_prefix):
                items.append(line)
                continue
            parts = re.split(r"[,\s]+" if self.split_spaces else r",", line)
            items.extend(p.strip() for p in parts if p.strip())
        return list(dict.fromkeys(items))

    def validate(self, value):
        if self.required and not value:
            raise ValidationError(self.error_messages["required"], code="required")

    def run_validators(self, value):
        for item in value or []:
            super().run_validators(item)

    def has_changed(self, initial, data):
        return self.to_python(initial or []) != self.to_python(data)


class SecretTextarea(forms.Textarea):
    """A textarea for key material: what was typed is never rendered back into the page."""

    def format_value(self, value):
        return None


def pem_textarea(rows: int, *, secret: bool = False, cols: int = 70) -> forms.Textarea:
    """A monospace-friendly box for PEM text; ``secret`` for key material (never rendered back)."""
    attrs = {"rows": rows, "cols": cols, "spellcheck": "false"}
    if secret:
        return SecretTextarea(attrs={**attrs, "autocomplete": "off"})
    return forms.Textarea(attrs=attrs)


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    widget = MultipleFileInput

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(d, initial) for d in data if d]
        return [single(data, initial)] if data else []


def read_upload(upload, what: str) -> str:
    """An uploaded text file (PEM), size-capped; bytes outside ASCII are kept as latin-1."""
    if upload is None:
        return ""
    if upload.size > MAX_UPLOAD_BYTES:
        raise ValidationError(f"{what}: {upload.name} is larger than {MAX_UPLOAD_BYTES // 1024} KiB.")
    return upload.read().decode("latin-1")


def split_private_key(text: str) -> tuple[str, str | None]:
    """(text without its private key block, the key block or None); a file may carry cert + key."""
    match = _PRIVATE_KEY_RE.search(text)
    if match is None:
        return text, None
    return text[: match.start()] + text[match.end() :], match.group(0)


def _checkboxes(choices, **kwargs) -> forms.MultipleChoiceField:
    kwargs.setdefault("required", False)
    return forms.MultipleChoiceField(choices=choices, widget=forms.CheckboxSelectMultiple, **kwargs)


if TYPE_CHECKING:
    from certmgr.models import Organization

    # The mixins below go in front of a Django form; the type checker reads them as one.
    _Form = forms.BaseForm
    _ModelForm = forms.BaseModelForm[Any]
else:
    _Form = _ModelForm = object


class SubjectFieldsMixin(_Form):
    """Declares subject_<part> inputs; ``subject_dict()`` gathers the filled ones."""

    def subject_dict(self) -> dict[str, str]:
        subject = {}
        for name, _, _ in SUBJECT_FIELDS:
            value = (self.cleaned_data.get(f"subject_{name}") or "").strip()
            if value:
                subject[name] = value.upper() if name == "country" else value
        return subject


def _clean_country(value: str | None) -> str:
    value = (value or "").strip()
    if value and not (len(value) == 2 and value.isascii() and value.isalpha()):
        raise ValidationError("A two-letter ISO 3166 code, e.g. DE.")
    return value.upper()


def _org_field(queryset) -> forms.ModelChoiceField:
    """The organization: preselected when there is one to choose from, else chosen (never the first by
    name, which would quietly put the row into the wrong organization)."""
    only = single_organization(queryset)
    field = forms.ModelChoiceField(
        queryset=queryset,
        empty_label=None if only is not None else "— choose the organization —",
        help_text="The organization this belongs to; only its members see it.",
    )
    if only is not None:
        field.initial = only.pk
    return field


class _UsageFieldsMixin(_Form):
    """``extended_key_usages`` checkboxes plus ``other_extended_key_usages`` (dotted OIDs) as one list."""

    def _split_ekus(self, values):
        known = [v for v in values or [] if v in x509.EXTENDED_KEY_USAGES]
        other = [v for v in values or [] if v not in x509.EXTENDED_KEY_USAGES]
        self.initial["extended_key_usages"] = known
        self.initial["other_extended_key_usages"] = other

    def clean_other_extended_key_usages(self):
        values = self.cleaned_data.get("other_extended_key_usages") or []
        bad = [v for v in values if not re.fullmatch(r"[0-2](\.\d+)+", v)]
        if bad:
            raise ValidationError(f"Not dotted OIDs: {', '.join(bad)}")
        return values

    def _merged_ekus(self) -> list[str]:
        known = self.cleaned_data.get("extended_key_usages") or []
        other = self.cleaned_data.get("other_extended_key_usages") or []
        return list(dict.fromkeys([*known, *other]))


# The help of the fields every screen shares; a form's own help text wins.
FIELD_HELP = {
    "organization": "The organization this belongs to; only its members see it, and its CAs, policies "
    "and connections are the ones offered here.",
    "name": "How it is called in certmgr's lists and the API; unique in the organization.",
    "description": "A note for your colleagues (optional).",
    "kind": "An internal root signs itself; an internal intermediate is signed by a parent CA here.",
    "key_algorithm": "ECDSA P-256 is fast and accepted everywhere; RSA for old clients; Ed25519 is not "
    "accepted by browsers.",
    "subject_common_name": "The CA's name in the certificates it signs, e.g. “Example Issuing CA”.",
    "common_name": "The certificate's subject CN, e.g. www.example.com (clients check the SANs).",
    "subject_organization": "Subject O: your organization's legal name (optional).",
    "subject_organizational_unit": "Subject OU: a department (optional; public CAs no longer include it).",
    "subject_country": "Subject C: a two-letter ISO 3166 code, e.g. DE (optional).",
    "subject_state": "Subject ST: state or province, spelled out (optional).",
    "subject_locality": "Subject L: city (optional).",
    "issuer_type": "A certificate authority (internal or ACME) signs it, or it signs itself (self-signed: "
    "for tests and closed systems).",
    "validity_days": "How long each certificate is valid; the policy and the CA may allow less.",
    "extended_key_usages": "What the certificate may be used for (server or client authentication, code "
    "signing, ...). None checked: the policy's or the usual ones.",
    "auto_renew": "Renew before expiry without anyone pressing a button (see “Renew before”).",
}


class _HelpTextsMixin(_Form):
    """Every field has a help text: the form's own, else the shared one of ``FIELD_HELP``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            if not field.help_text and name in FIELD_HELP:
                field.help_text = FIELD_HELP[name]


class _UniqueNameMixin(_ModelForm):
    """A name taken in the organization is an error on the name field (not a form-wide one)."""

    def clean_name(self):
        name = (self.cleaned_data.get("name") or "").strip()
        org = self.cleaned_data.get("organization")
        org_id = org.pk if org is not None else self.instance.organization_id
        if name and org_id is not None:
            model = type(self.instance)
            taken = model._default_manager.filter(organization_id=org_id, name=name).exclude(
                pk=self.instance.pk
            )
            if taken.exists():
                raise ValidationError(f"A {model._meta.verbose_name} named {name!r} already exists here.")
        return name


# --- certificate authorities ---------------------------------------------------------------------------
class CaCreateForm(
    OrganizationChoicesMixin, _HelpTextsMixin, _UniqueNameMixin, SubjectFieldsMixin, forms.ModelForm
):
    organization_dependent = {"parent": "parent CA"}
    kind = forms.ChoiceField(choices=INTERNAL_KINDS, initial=CertificateAuthority.Kind.INTERNAL_ROOT)
    subject_common_name = forms.CharField(label="Common name (CN)", max_length=64)
    subject_organization = forms.CharField(label="Organization (O)", max_length=64, required=False)
    subject_organizational_unit = forms.CharField(
        label="Organizational unit (OU)", max_length=64, required=False
    )
    subject_country = forms.CharField(label="Country (C)", max_length=2, required=False)
    subject_state = forms.CharField(label="State or province (ST)", max_length=128, required=False)
    subject_locality = forms.CharField(label="Locality (L)", max_length=128, required=False)
    key_algorithm = forms.ChoiceField(choices=KEY_ALGORITHMS, initial="ec-p256")
    validity_days = forms.IntegerField(
        min_value=1,
        max_value=36500,
        required=False,
        help_text="Empty: 3650 days for a root; 1825 for an intermediate, ending before its parent. An "
        "intermediate cannot outlive its parent.",
    )
    max_path_length = forms.IntegerField(
        min_value=0,
        max_value=10,
        required=False,
        help_text="How many intermediate CAs may follow below this one (0: it only issues end-entity "
        "certificates); empty for no limit.",
    )

    class Meta:
        model = CertificateAuthority
        fields = [
            "organization",
            "name",
            "kind",
            "parent",
            "key_algorithm",
            "max_path_length",
            "ocsp_enabled",
            "delta_crl_enabled",
        ]
        help_texts = {
            "parent": "For an intermediate: the internal CA of the same organization that signs it.",
        }

    def clean_subject_country(self):
        return _clean_country(self.cleaned_data.get("subject_country"))

    def clean(self):
        super().clean()
        data = self.cleaned_data
        kind, parent, org = data.get("kind"), data.get("parent"), data.get("organization")
        if kind == CertificateAuthority.Kind.INTERNAL_INTERMEDIATE:
            if parent is None:
                self.add_error("parent", "An intermediate CA needs a parent CA.")
            elif org is not None and parent.organization_id != org.pk:
                self.add_error("parent", "The parent must be a CA of the same organization.")
            elif not parent.is_internal:
                self.add_error("parent", "The parent must be an internal CA.")
            elif parent.status != CertificateAuthority.Status.ACTIVE:
                self.add_error("parent", f"The parent CA {parent.name!r} is disabled.")
        elif parent is not None:
            self.add_error(
                "parent", "A root CA has no parent; leave it empty or choose 'Internal intermediate'."
            )
        return data

    def subject_dict(self) -> dict[str, str]:
        return {"common_name": self.cleaned_data["subject_common_name"].strip(), **super().subject_dict()}


class CaImportForm(forms.Form):
    organization: forms.ModelChoiceField[Organization] = forms.ModelChoiceField(
        queryset=None, empty_label=None
    )
    name = forms.CharField(max_length=100)
    certificate = forms.CharField(
        label="CA certificate (PEM)",
        required=False,
        widget=pem_textarea(8),
        help_text="Paste the PEM, or upload it below.",
    )
    certificate_file = forms.FileField(label="…or certificate file", required=False)
    private_key = forms.CharField(
        label="CA private key (PEM, unencrypted)",
        required=False,
        widget=pem_textarea(6, secret=True),
        help_text="Stored encrypted; it is never shown or exported again.",
    )
    private_key_file = forms.FileField(label="…or key file", required=False)

    def __init__(self, *args, organizations, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["organization"] = _org_field(organizations)

    def clean(self):
        super().clean()
        data = self.cleaned_data
        cert = data.get("certificate") or read_upload(data.get("certificate_file"), "certificate")
        key = data.get("private_key") or read_upload(data.get("private_key_file"), "private key")
        if not cert.strip():
            self.add_error("certificate", "Paste or upload the CA certificate.")
        if not key.strip():
            self.add_error("private_key", "Paste or upload the CA's private key.")
        data["certificate_pem"], data["private_key_pem"] = cert, key
        return data


# --- policies ------------------------------------------------------------------------------------------
PATTERN_HELP = (
    "One per line or comma-separated. <code>www.example.com</code> matches exactly; "
    "<code>*.example.com</code> matches any name below example.com; <code>~regex</code> (a whole line) "
    "must match the whole name. Empty: any name."
)


class PolicyForm(_HelpTextsMixin, _UniqueNameMixin, _UsageFieldsMixin, forms.ModelForm):
    common_name_patterns = ListTextField(
        whole_line_prefix="~", label="Allowed common names", help_text=PATTERN_HELP
    )
    san_patterns = ListTextField(
        whole_line_prefix="~",
        label="Allowed SAN names",
        help_text=PATTERN_HELP + " Checked for DNS names and the domain of email addresses.",
    )
    allowed_san_types = _checkboxes(
        SAN_TYPE_CHOICES, label="Allowed SAN types", help_text="None checked: all."
    )
    allowed_key_algorithms = _checkboxes(
        KEY_ALGORITHMS, label="Allowed key algorithms", help_text="None checked: all."
    )
    key_usages = _checkboxes(KEY_USAGE_CHOICES, label="Allowed key usages", help_text="None checked: any.")
    extended_key_usages = _checkboxes(
        EKU_CHOICES, label="Allowed extended key usages", help_text="None checked (and no OIDs below): any."
    )
    other_extended_key_usages = ListTextField(
        label="Other allowed EKU OIDs",
        split_spaces=True,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Dotted OIDs, e.g. 1.3.6.1.5.5.7.3.17.",
    )

    class Meta:
        model = Policy
        fields = ["organization", *services.POLICY_FIELDS]  # what the service lets a caller set
        help_texts = {
            "max_validity_days": "Longest validity a subscriber of this policy may ask for; empty: no limit."
        }
        widgets = {"description": forms.Textarea(attrs={"rows": 2, "cols": 60})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._split_ekus(self.instance.extended_key_usages if self.instance.pk else [])
        if self.instance.pk and "organization" in self.fields:
            self.fields["organization"].disabled = True

    def service_values(self) -> dict:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "description": data.get("description") or "",
            "common_name_patterns": data.get("common_name_patterns") or [],
            "san_patterns": data.get("san_patterns") or [],
            "allowed_san_types": data.get("allowed_san_types") or [],
            "allowed_key_algorithms": data.get("allowed_key_algorithms") or [],
            "max_validity_days": data.get("max_validity_days"),
            "key_usages": data.get("key_usages") or [],
            "extended_key_usages": self._merged_ekus(),
            "allow_ca": bool(data.get("allow_ca")),
            "new_key_at_renewal": bool(data.get("new_key_at_renewal")),
        }


# --- subscribers ---------------------------------------------------------------------------------------
class SubscriberForm(
    OrganizationChoicesMixin,
    _HelpTextsMixin,
    _UniqueNameMixin,
    _UsageFieldsMixin,
    SubjectFieldsMixin,
    forms.ModelForm,
):
    organization_dependent = {"ca": "CA", "policy": "policy"}

    def clean_ca_path_length(self) -> int:
        return self.cleaned_data.get("ca_path_length") or 0

    sans = ListTextField(
        split_spaces=True,
        label="Subject alternative names",
        help_text="One per line or comma-separated: DNS names (<code>www.example.com</code>, "
        "<code>*.example.com</code>), IP addresses, email addresses, URIs (<code>spiffe://…</code>).",
    )
    ca_path_length = forms.IntegerField(
        label="CA path length",
        min_value=0,
        max_value=32,
        required=False,
        initial=0,
        help_text="CA certificates only: how many CAs may stand below it (0: end-entity certificates only).",
    )
    subject_organization = forms.CharField(label="Organization (O)", max_length=64, required=False)
    subject_organizational_unit = forms.CharField(
        label="Organizational unit (OU)", max_length=64, required=False
    )
    subject_country = forms.CharField(label="Country (C)", max_length=2, required=False)
    subject_state = forms.CharField(label="State or province (ST)", max_length=128, required=False)
    subject_locality = forms.CharField(label="Locality (L)", max_length=128, required=False)
    key_usages = _checkboxes(
        KEY_USAGE_CHOICES,
        help_text="None checked: the usual ones for the key type (digital signature, "
        "plus key encipherment for RSA).",
    )
    extended_key_usages = _checkboxes(EKU_CHOICES)
    other_extended_key_usages = ListTextField(
        label="Other EKU OIDs",
        split_spaces=True,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Dotted OIDs, e.g. 1.3.6.1.5.5.7.3.17.",
    )

    class Meta:
        model = Subscriber
        # what the service lets a caller set; the subject is edited as the subject_* fields
        # issuer_options are edited as one field per option its CA's issuer declares (issuer_option_*)
        fields = [
            "organization",
            *(f for f in services.SUBSCRIBER_FIELDS if f not in ("subject", "issuer_options")),
        ]
        labels = {"ca": "Issuing CA", "validity_days": "Validity (days)", "reuse_key": "Reuse the key"}
        help_texts = {
            "policy": "The certificate template every issuance and renewal is checked against.",
            "renew_before_days": (
                "Renew this many days before expiry; empty: at two thirds of the lifetime (half for 10 days"
                " or less), or inside the CA's ARI window when it publishes one."
            ),
            "ca": "Not used when the issuer type is self-signed.",
        }

    #: What an ACME CA decides itself (its profile fixes validity, usages and subject): hidden or explained.
    ACME_DECIDES = (
        "validity_days",
        "key_usages",
        "extended_key_usages",
        "other_extended_key_usages",
        "subject_organization",
        "subject_organizational_unit",
        "subject_country",
        "subject_state",
        "subject_locality",
    )

    class Media:  # replaces the mixin's (a plain class's Media is not merged): both scripts
        js = [ORGANIZATION_SCRIPT, "pki/subscriber_form.js"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        instance = self.instance
        self._add_issuer_option_fields()
        self._explain_acme(self._chosen_ca())
        if instance.pk:
            self._split_ekus(instance.extended_key_usages)
            for name, _, _ in SUBJECT_FIELDS:
                self.initial[f"subject_{name}"] = (instance.subject or {}).get(name, "")
            if "organization" in self.fields:
                self.fields["organization"].disabled = True
        else:
            self._split_ekus([])

    @staticmethod
    def issuer_option_fields() -> dict[str, tuple[str, issuers.SubscriberOption]]:
        """``issuer_option_<name>`` -> (the CA kind whose issuer declares it, the option)."""
        fields: dict[str, tuple[str, issuers.SubscriberOption]] = {}
        for backend in issuers.backends():
            for option in backend.subscriber_options():
                for kind in backend.kinds:
                    fields.setdefault(f"issuer_option_{option.name}", (kind, option))
        return fields

    def _add_issuer_option_fields(self) -> None:
        stored = self.instance.issuer_options or {}
        for name, (_, option) in self.issuer_option_fields().items():
            field: forms.Field
            if option.choices:
                field = forms.ChoiceField(
                    choices=[("", "— the CA's setting —"), *option.choices], required=False
                )
            else:
                field = forms.CharField(max_length=option.max_length, required=False)
            field.label, field.help_text = option.label, option.help_text
            field.initial = stored.get(option.name, "")
            self.fields[name] = field

    def issuer_options(self) -> dict[str, str]:
        """The options of the chosen CA's issuer, as typed (the service checks them)."""
        data = self.cleaned_data
        ca = data.get("ca") if data.get("issuer_type") == Subscriber.IssuerType.CA else None
        if ca is None:
            return {}
        return {
            option.name: data.get(f"issuer_option_{option.name}") or ""
            for option in issuers.backend_for(ca).subscriber_options()
        }

    def _chosen_ca(self) -> CertificateAuthority | None:
        field = self.fields.get("ca")
        if not isinstance(field, forms.ModelChoiceField) or field.queryset is None:
            return None
        raw = self.data.get(self.add_prefix("ca")) if self.is_bound else self.initial.get("ca")
        raw = getattr(raw, "pk", raw)
        if raw in (None, "") and self.instance.pk:
            raw = self.instance.ca_id
        if raw in (None, "") or not str(raw).isdigit():
            return None
        return field.queryset.filter(pk=int(raw)).select_related("acme").first()

    def _explain_acme(self, ca: CertificateAuthority | None) -> None:
        """With an ACME CA chosen: say on each field the CA decides that it is ignored, and what the ACME
        CA does take from this form (the key type) and from its own settings (profile, challenge)."""
        if ca is None or ca.kind != CertificateAuthority.Kind.ACME:
            return
        for name in self.ACME_DECIDES:
            if name in self.fields:
                self.fields[name].help_text = (
                    f"Decided by the ACME CA {ca.name} (its profile sets validity, usages and subject "
                    "fields): not used."
                )
        settings = getattr(ca, "acme", None)
        if "ca" in self.fields and settings is not None:
            self.fields["ca"].help_text = (
                f"{ca.name} is an ACME CA: it decides validity, key usages and the subject's O/OU/C. Its "
                f"profile is {settings.profile or '(the CA default)'} and it uses the "
                f"{settings.get_challenge_type_display()} challenge, unless this subscriber chooses its own "
                "below; "
                "the key type below is the order's key."
            )
        if "key_algorithm" in self.fields:
            self.fields[
                "key_algorithm"
            ].help_text = (
                "The order's key, made here (ACME CAs accept ECDSA P-256/P-384 and RSA; not Ed25519)."
            )

    def clean_subject_country(self):
        return _clean_country(self.cleaned_data.get("subject_country"))

    def clean(self):
        super().clean()
        data = self.cleaned_data
        if (
            data.get("issuer_type") == Subscriber.IssuerType.CA
            and data.get("ca") is None
            and "ca" in self.fields
        ):
            self.add_error("ca", "Choose the issuing CA (or the self-signed issuer type).")
        if not data.get("common_name") and not data.get("sans") and "common_name" in self.fields:
            self.add_error("common_name", "Give a common name or at least one SAN.")
        return data

    def service_values(self) -> dict:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "issuer_type": data["issuer_type"],
            "ca": data.get("ca") if data["issuer_type"] == Subscriber.IssuerType.CA else None,
            "policy": data.get("policy"),
            "common_name": (data.get("common_name") or "").strip(),
            "sans": data.get("sans") or [],
            "subject": self.subject_dict(),
            "key_algorithm": data["key_algorithm"],
            "validity_days": data["validity_days"],
            "key_usages": data.get("key_usages") or [],
            "extended_key_usages": self._merged_ekus(),
            "auto_renew": bool(data.get("auto_renew")),
            "renew_before_days": data.get("renew_before_days"),
            "reuse_key": bool(data.get("reuse_key")),
            "issuer_options": self.issuer_options(),
        }


class CsrPasteForm(forms.Form):
    """A CSR pasted or uploaded (PEM, or DER when uploaded)."""

    csr = forms.CharField(
        label="CSR (PEM)",
        required=False,
        widget=pem_textarea(10),
        help_text="-----BEGIN CERTIFICATE REQUEST----- …",
    )
    csr_file = forms.FileField(label="…or CSR file", required=False)

    def clean(self):
        super().clean()
        data = self.cleaned_data
        text = data.get("csr") or ""
        upload = data.get("csr_file")
        if not text.strip() and upload is not None:
            if upload.size > MAX_UPLOAD_BYTES:
                raise ValidationError("The CSR file is too large.")
            raw = upload.read()
            text = raw.decode("latin-1") if b"-----BEGIN" in raw else raw
        if not text or (isinstance(text, str) and not text.strip()):
            self.add_error("csr", "Paste or upload a CSR.")
        data["csr_data"] = text
        return data


class IssueFromCsrForm(CsrPasteForm):
    pass


# --- CSRs ----------------------------------------------------------------------------------------------
class CsrGenerateForm(SubjectFieldsMixin, forms.Form):
    organization: forms.ModelChoiceField[Organization] = forms.ModelChoiceField(
        queryset=None, empty_label=None
    )
    name = forms.CharField(max_length=100, help_text="A label for the list, e.g. the host or service.")
    common_name = forms.CharField(label="Common name (CN)", max_length=64, required=False)
    sans = ListTextField(
        split_spaces=True, label="Subject alternative names", help_text="One per line or comma-separated."
    )
    subject_organization = forms.CharField(label="Organization (O)", max_length=64, required=False)
    subject_organizational_unit = forms.CharField(
        label="Organizational unit (OU)", max_length=64, required=False
    )
    subject_country = forms.CharField(label="Country (C)", max_length=2, required=False)
    subject_state = forms.CharField(label="State or province (ST)", max_length=128, required=False)
    subject_locality = forms.CharField(label="Locality (L)", max_length=128, required=False)
    key_algorithm = forms.ChoiceField(choices=KEY_ALGORITHMS, initial="ec-p256")

    def __init__(self, *args, organizations, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["organization"] = _org_field(organizations)

    def clean_subject_country(self):
        return _clean_country(self.cleaned_data.get("subject_country"))

    def clean(self):
        super().clean()
        data = self.cleaned_data
        if not (data.get("common_name") or "").strip() and not data.get("sans"):
            self.add_error("common_name", "Give a common name or at least one SAN.")
        return data


class CsrUploadForm(CsrPasteForm):
    organization: forms.ModelChoiceField[Organization] = forms.ModelChoiceField(
        queryset=None, empty_label=None
    )
    name = forms.CharField(max_length=100)

    field_order = ["organization", "name", "csr", "csr_file"]

    def __init__(self, *args, organizations, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["organization"] = _org_field(organizations)
        self.order_fields(self.field_order)


class IssueFromStoredCsrForm(forms.Form):
    subscriber: forms.ModelChoiceField[Subscriber] = forms.ModelChoiceField(
        queryset=None,
        help_text="The certificate gets the subscriber's names, validity and usages, checked against its "
        "policy; the CSR supplies the public key.",
    )

    def __init__(self, *args, subscribers, **kwargs):
        super().__init__(*args, **kwargs)
        model_choice_field(self.fields, "subscriber").queryset = subscribers


# --- certificates --------------------------------------------------------------------------------------
class RevokeForm(forms.Form):
    reason = forms.ChoiceField(
        choices=RevocationReason.choices,
        initial=RevocationReason.UNSPECIFIED,
        help_text="RFC 5280 reason code written to the CRL. Revocation cannot be undone.",
    )


class ReissueForm(forms.Form):
    """Re-issue every current certificate of a CA (after a key compromise or a misissuance)."""

    to_ca = forms.ModelChoiceField(
        queryset=CertificateAuthority.objects.none(),
        required=False,
        label="Move subscribers to",
        empty_label="(stay on this CA)",
        help_text="After a CA key compromise, move every subscriber to another CA and issue from it.",
    )
    revoke_reason = forms.ChoiceField(
        choices=[("", "(keep them until they expire)"), *RevocationReason.choices],
        required=False,
        label="Revoke the replaced certificates",
        help_text="Each replaced certificate is revoked once its successor exists; the CRL is published.",
    )
    confirm = forms.BooleanField(
        label="Replace every current certificate of this CA",
        help_text="Runs in a worker; the result is recorded in the audit log (ca.reissue.finished).",
    )

    def __init__(self, *args, ca: CertificateAuthority, **kwargs):
        super().__init__(*args, **kwargs)
        model_choice_field(self.fields, "to_ca").queryset = (
            CertificateAuthority.objects.filter(
                organization_id=ca.organization_id, status=CertificateAuthority.Status.ACTIVE
            )
            .exclude(pk=ca.pk)
            .order_by("name")
        )


class KeyExportForm(forms.Form):
    """A private key leaves certmgr only after the operator confirms it and says why (audited)."""

    reason = forms.CharField(
        label="Reason",
        max_length=services.EXPORT_REASON_MAX,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Why the key leaves certmgr (e.g. the ticket or the server it goes to); kept in the "
        "audit event of the export.",
        error_messages={"required": "Say why the key is exported."},
    )
    confirm = forms.BooleanField(
        label="I take responsibility for this copy of the private key",
        help_text="Anyone holding the key can impersonate the certificate's names until it is revoked.",
        error_messages={"required": "Confirm that the key may leave certmgr."},
    )

    def clean_reason(self) -> str:
        reason = " ".join((self.cleaned_data.get("reason") or "").split())
        if not reason:
            raise ValidationError("Say why the key is exported.")
        return reason


class Pkcs12Form(KeyExportForm):
    field_order = ["password", "password_again", "alias", "reason", "confirm"]

    password = forms.CharField(
        min_length=services.PKCS12_MIN_PASSWORD,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=f"At least {services.PKCS12_MIN_PASSWORD} characters; the file's importer needs it.",
    )
    password_again = forms.CharField(
        label="Password (again)",
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    alias = forms.CharField(
        max_length=64,
        required=False,
        help_text="The friendly name of the entry in the keystore; empty: the common name.",
    )

    def clean(self):
        super().clean()
        data = self.cleaned_data
        if data.get("password") and data.get("password") != data.get("password_again"):
            self.add_error("password_again", "The two passwords differ.")
        return data


class CertificateImportForm(forms.Form):
    organization: forms.ModelChoiceField[Organization] = forms.ModelChoiceField(
        queryset=None, empty_label=None
    )
    # A declared field: the form metaclass moves it into base_fields, so BaseForm.files (the uploads) is
    # untouched; django-stubs reads it as a class attribute overriding that.
    files = MultipleFileField(  # type: ignore[assignment]
        label="PEM files",
        required=False,
        help_text="One certificate per file, optionally followed by its chain and its private key. Up to "
        f"{MAX_UPLOAD_FILES} files of {MAX_UPLOAD_BYTES // 1024} KiB each.",
    )
    pem = forms.CharField(
        label="…or paste PEM",
        required=False,
        widget=pem_textarea(8),
        help_text="A certificate, optionally with its chain.",
    )
    key_file = forms.FileField(label="Private key file (optional)", required=False)
    key = forms.CharField(
        label="…or paste the private key (optional)",
        required=False,
        widget=pem_textarea(4, secret=True),
        help_text="Goes with the pasted PEM or a single uploaded file; kept encrypted if it matches.",
    )

    def __init__(self, *args, organizations, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["organization"] = _org_field(organizations)

    def clean(self):
        super().clean()
        data = self.cleaned_data
        sources: list[tuple[str, str, str | None]] = []  # (name, pem text, key)
        files = data.get("files") or []
        if len(files) > MAX_UPLOAD_FILES:
            raise ValidationError(f"Upload at most {MAX_UPLOAD_FILES} files at once.")
        for upload in files:
            text, key = split_private_key(read_upload(upload, "file"))
            sources.append((upload.name, text, key))
        if (data.get("pem") or "").strip():
            text, key = split_private_key(data["pem"])
            sources.append(("pasted PEM", text, key))
        if not sources:
            raise ValidationError("Upload PEM files or paste a certificate.")
        separate_key = (data.get("key") or "").strip() or read_upload(data.get("key_file"), "key").strip()
        if separate_key:
            if len(sources) != 1:
                raise ValidationError(
                    "A separate private key goes with one certificate only; put each key into its "
                    "certificate's file instead."
                )
            name, text, _ = sources[0]
            sources[0] = (name, text, separate_key)
        data["sources"] = sources
        return data
