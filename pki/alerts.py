"""Alerts: per-organization rules that send certificate events to e-mail and webhook channels.

Events: ``expiring`` (at thresholds of days before notAfter, once per threshold per certificate and channel),
``renewal_failed``, ``issued`` and ``revoked`` (raised by pki.services through ``notify``). Rules narrow by
CA, subscriber and name pattern (pki.policy's syntax). Every alert is an ``AlertDelivery`` row first and a
message second: the row is the history, the retry queue and, for expiry, the unique record that makes a
threshold fire once however many runs (or concurrent runs) meet it. A failed send is retried with backoff
(``pki.renewal.retry_delay``) and ends ``failed`` after ``CERTMGR_ALERT_MAX_ATTEMPTS``, still listed.

Webhooks POST JSON signed with ``X-Certmgr-Signature: sha256=<hex HMAC-SHA256 of the raw body>`` under the
channel's secret (encrypted at rest, shown once when generated), through ``certmgr.outbound``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core import mail
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from certmgr import audit, outbound
from certmgr.actors import Actor, as_actor
from certmgr.errors import Conflict
from certmgr.jobs import JobReport
from certmgr.models import Organization
from certmgr.permissions import Action
from certmgr.services import audited_delete, require
from pki import deployment, renewal
from pki.models import (
    AlertChannel,
    AlertDelivery,
    AlertRule,
    Certificate,
    Subscriber,
)
from pki.policy import name_matches, validate_pattern

log = logging.getLogger(__name__)

Event = AlertRule.Event
SIGNATURE_HEADER = "X-Certmgr-Signature"
LEASE = timedelta(minutes=5)  # a claimed delivery is due again after this if its worker died mid-send
BATCH = 1000
SWEEP_ACTOR = Actor.system("task pki.alerts")


# --- settings ------------------------------------------------------------------------------------------
def default_thresholds() -> list[int]:
    raw = settings.CERTMGR_EXPIRY_ALERT_DAYS
    if isinstance(raw, str):
        raw = [part for part in raw.split(",") if part.strip()]
    return sorted({int(d) for d in raw}, reverse=True)


def max_attempts() -> int:
    return settings.CERTMGR_ALERT_MAX_ATTEMPTS


def _retry_delay(attempts: int) -> float:
    return renewal.retry_delay(
        attempts,
        base=settings.CERTMGR_ALERT_RETRY_BASE_SECONDS,
        cap=settings.CERTMGR_ALERT_RETRY_MAX_SECONDS,
    )


# --- validation (shared by every door) -----------------------------------------------------------------
def _text(field: str, value: Any, max_length: int, *, required: bool = False) -> str:
    value = (value or "").strip() if isinstance(value, str) or value is None else value
    if not isinstance(value, str) or len(value) > max_length or "\x00" in value:
        raise ValidationError({field: [f"Enter at most {max_length} characters, without NUL."]})
    if required and not value:
        raise ValidationError({field: ["This field is required."]})
    return value


def _recipients(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [part for part in value.replace(";", ",").replace("\n", ",").split(",")]
    if not isinstance(value, list | tuple):
        raise ValidationError({"recipients": ["Enter a list of e-mail addresses."]})
    cleaned = []
    for item in value:
        item = str(item).strip()
        if not item:
            continue
        try:
            validate_email(item)
        except ValidationError as exc:
            raise ValidationError({"recipients": [f"{item!r} is not an e-mail address."]}) from exc
        cleaned.append(item)
    if len(cleaned) > 50:
        raise ValidationError({"recipients": ["At most 50 recipients."]})
    return list(dict.fromkeys(cleaned))


def _check_channel(ch: AlertChannel) -> None:
    if ch.kind not in AlertChannel.Kind.values:
        raise ValidationError({"kind": [f"Choose one of: {', '.join(AlertChannel.Kind.values)}."]})
    if ch.kind == AlertChannel.Kind.EMAIL:
        if not ch.recipients:
            raise ValidationError({"recipients": ["An e-mail channel needs at least one recipient."]})
        ch.url, ch.url_hint, ch.slack = "", "", False
    else:
        ch.recipients = []
        try:
            URLValidator(schemes=["http", "https"])(ch.url)
        except ValidationError as exc:
            raise ValidationError({"url": ["Enter an http:// or https:// URL."]}) from exc
        ch.url_hint = url_hint(ch.url)


def url_hint(url: str) -> str:
    """What may be shown of a webhook URL: scheme, host and its last 4 characters (the rest may be a key)."""
    parts = urlsplit(url)
    tail = url[-4:] if len(url) > len(f"{parts.scheme}://{parts.netloc}") + 8 else ""
    return f"{parts.scheme}://{parts.hostname or ''}/…{tail}"[:300]


def _patterns(value: Any) -> list[str]:
    if isinstance(value, str):
        value = value.splitlines()
    if not isinstance(value, list | tuple):
        raise ValidationError({"name_patterns": ["Enter a list of name patterns."]})
    cleaned = [str(p).strip() for p in value if str(p).strip()]
    for p in cleaned:
        if (why := validate_pattern(p)) is not None:
            raise ValidationError({"name_patterns": [why]})
    return cleaned


def _thresholds(value: Any) -> list[int]:
    if isinstance(value, str):
        value = [part for part in value.replace(" ", ",").split(",") if part]
    if not isinstance(value, list | tuple):
        raise ValidationError({"thresholds": ["Enter a list of days."]})
    try:
        days = sorted({int(d) for d in value}, reverse=True)
    except (TypeError, ValueError) as exc:
        raise ValidationError({"thresholds": ["Enter whole numbers of days."]}) from exc
    if any(d < 1 or d > 3650 for d in days) or len(days) > 20:
        raise ValidationError({"thresholds": ["Enter up to 20 thresholds between 1 and 3650 days."]})
    return days


def _same_org(org_id: int, **rows: Any) -> None:
    for field, row in rows.items():
        if row is not None and row.organization_id != org_id:
            raise ValidationError({field: ["Choose one of this organization's."]})


# --- channels ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SavedChannel:
    channel: AlertChannel
    secret: str | None  # set only when certmgr generated a secret just now: show it once


def _duplicate(kind: str, name: str) -> Conflict:
    return Conflict(f"an alert {kind} named {name!r} already exists in this organization", field="name")


def _channel_summary(ch: AlertChannel) -> dict[str, Any]:
    return {
        "kind": ch.kind,
        "enabled": ch.enabled,
        "recipients": ch.recipients,
        "url": ch.url_hint,
        "slack": ch.slack,
    }


def create_channel(
    organization: Organization,
    *,
    name: str,
    kind: str,
    actor: Actor,
    recipients: Any = (),
    url: str = "",
    slack: bool = False,
    enabled: bool = True,
    secret: str | None = None,
) -> SavedChannel:
    """A new channel. A webhook without a given secret gets a generated one, returned once."""
    actor = as_actor(actor)
    with audit.failures(actor, "alert_channel.create", organization, name=name, kind=kind):
        require(actor, Action.MANAGE, organization.pk)
        ch = AlertChannel(
            organization=organization,
            name=_text("name", name, 100, required=True),
            kind=kind,
            recipients=_recipients(recipients),
            url=_text("url", url, 2000),
            slack=bool(slack),
            enabled=bool(enabled),
        )
        _check_channel(ch)
        shown = None
        if ch.kind == AlertChannel.Kind.WEBHOOK:
            given = _text("secret", secret, 500)
            shown = None if given else secrets.token_urlsafe(32)
            ch.secret = given or shown or ""
        try:
            with transaction.atomic():
                if AlertChannel.objects.filter(organization=organization, name=ch.name).exists():
                    raise _duplicate("channel", ch.name)
                ch.save()
                audit.record(actor, "alert_channel.create", ch, **_channel_summary(ch))
        except IntegrityError as exc:
            raise _duplicate("channel", ch.name) from exc
    return SavedChannel(ch, shown)


CHANNEL_FIELDS = ("name", "recipients", "url", "slack", "enabled")


def update_channel(
    channel: AlertChannel,
    *,
    actor: Actor,
    secret: str | None = None,
    regenerate_secret: bool = False,
    **changes: Any,
) -> SavedChannel:
    """Change a channel. An empty ``secret`` keeps the stored one; ``regenerate_secret`` makes a new one
    (returned once). The kind is fixed: make a new channel instead."""
    actor = as_actor(actor)
    with audit.failures(actor, "alert_channel.update", channel):
        require(actor, Action.MANAGE, channel.organization_id)
        unknown = set(changes) - set(CHANNEL_FIELDS)
        if unknown:
            raise ValidationError({k: ["This field cannot be changed."] for k in sorted(unknown)})
        try:
            with transaction.atomic():
                ch = AlertChannel.objects.select_for_update().get(pk=channel.pk)
                changed = []
                for field, value in changes.items():
                    if field == "name":
                        value = _text("name", value, 100, required=True)
                        if (
                            value != ch.name
                            and AlertChannel.objects.filter(
                                organization_id=ch.organization_id, name=value
                            ).exists()
                        ):
                            raise _duplicate("channel", value)
                    elif field == "recipients":
                        value = _recipients(value)
                    elif field == "url":
                        value = _text("url", value, 2000)
                        if not value and ch.kind == AlertChannel.Kind.WEBHOOK:
                            continue  # write-only: an empty URL keeps the stored one
                    else:
                        value = bool(value)
                    if getattr(ch, field) != value:
                        setattr(ch, field, value)
                        changed.append(field)
                _check_channel(ch)
                shown = None
                if ch.kind == AlertChannel.Kind.WEBHOOK:
                    given = _text("secret", secret, 500)
                    if regenerate_secret:
                        shown = secrets.token_urlsafe(32)
                    if given or shown:
                        ch.secret = given or shown or ""
                        changed.append("secret")
                ch.updated_at = timezone.now()
                ch.save()
                audit.record(actor, "alert_channel.update", ch, changed=changed, **_channel_summary(ch))
        except IntegrityError as exc:
            raise _duplicate("channel", changes.get("name", "")) from exc
    return SavedChannel(ch, shown)


def delete_channel(channel: AlertChannel, *, actor: Actor) -> None:
    """Remove a channel; its deliveries stay in the history (unlinked, with the channel's name)."""

    def prepare(locked: AlertChannel) -> None:
        # Pending sends of a removed channel cannot happen any more: say so rather than drop them.
        locked.deliveries.filter(status=AlertDelivery.Status.PENDING).update(
            status=AlertDelivery.Status.FAILED, last_error="channel deleted", next_attempt_at=None
        )

    audited_delete(
        channel,
        actor=actor,
        action="alert_channel.delete",
        lock=True,
        prepare=prepare,
        details={"kind": channel.kind},
    )


# --- rules ---------------------------------------------------------------------------------------------
RULE_FIELDS = ("name", "event", "enabled", "channels", "ca", "subscriber", "name_patterns", "thresholds")


def _apply_rule(rule: AlertRule, values: dict[str, Any]) -> list[AlertChannel] | None:
    """Validate and set ``values`` on ``rule``; returns the channels to set (None: unchanged)."""
    channels = None
    for field, value in values.items():
        if field == "name":
            rule.name = _text("name", value, 100, required=True)
        elif field == "event":
            if value not in Event.values:
                raise ValidationError({"event": [f"Choose one of: {', '.join(Event.values)}."]})
            rule.event = value
        elif field == "enabled":
            rule.enabled = bool(value)
        elif field == "channels":
            channels = list(value or [])
            for ch in channels:
                _same_org(rule.organization_id, channels=ch)
        elif field == "ca":
            _same_org(rule.organization_id, ca=value)
            rule.ca = value
        elif field == "subscriber":
            _same_org(rule.organization_id, subscriber=value)
            rule.subscriber = value
        elif field == "name_patterns":
            rule.name_patterns = _patterns(value)
        elif field == "thresholds":
            rule.thresholds = _thresholds(value)
    if rule.event != Event.EXPIRING:
        rule.thresholds = []
    return channels


def _rule_summary(rule: AlertRule, channels: Iterable[AlertChannel]) -> dict[str, Any]:
    return {
        "event": rule.event,
        "enabled": rule.enabled,
        "channels": sorted(ch.pk for ch in channels),
        "ca": rule.ca_id,
        "subscriber": rule.subscriber_id,
        "name_patterns": rule.name_patterns,
        "thresholds": rule.thresholds,
    }


def create_rule(organization: Organization, *, actor: Actor, **values: Any) -> AlertRule:
    actor = as_actor(actor)
    with audit.failures(actor, "alert_rule.create", organization, name=values.get("name", "")):
        require(actor, Action.MANAGE, organization.pk)
        unknown = set(values) - set(RULE_FIELDS)
        if unknown:
            raise ValidationError({k: ["Unknown field."] for k in sorted(unknown)})
        rule = AlertRule(organization=organization)
        channels = _apply_rule(rule, {"name": "", "event": "", **values}) or []
        try:
            with transaction.atomic():
                if AlertRule.objects.filter(organization=organization, name=rule.name).exists():
                    raise _duplicate("rule", rule.name)
                rule.save()
                rule.channels.set(channels)
                audit.record(actor, "alert_rule.create", rule, **_rule_summary(rule, channels))
        except IntegrityError as exc:
            raise _duplicate("rule", rule.name) from exc
    return rule


def update_rule(rule: AlertRule, *, actor: Actor, **values: Any) -> AlertRule:
    actor = as_actor(actor)
    with audit.failures(actor, "alert_rule.update", rule):
        require(actor, Action.MANAGE, rule.organization_id)
        unknown = set(values) - set(RULE_FIELDS)
        if unknown:
            raise ValidationError({k: ["Unknown field."] for k in sorted(unknown)})
        try:
            with transaction.atomic():
                locked = AlertRule.objects.select_for_update().get(pk=rule.pk)
                old_name = locked.name
                channels = _apply_rule(locked, values)
                if (
                    locked.name != old_name
                    and AlertRule.objects.filter(
                        organization_id=locked.organization_id, name=locked.name
                    ).exists()
                ):
                    raise _duplicate("rule", locked.name)
                locked.updated_at = timezone.now()
                locked.save()
                if channels is not None:
                    locked.channels.set(channels)
                audit.record(
                    actor,
                    "alert_rule.update",
                    locked,
                    changed=sorted(values),
                    **_rule_summary(locked, locked.channels.all()),
                )
        except IntegrityError as exc:
            raise _duplicate("rule", values.get("name", "")) from exc
    return locked


def delete_rule(rule: AlertRule, *, actor: Actor) -> None:
    audited_delete(rule, actor=actor, action="alert_rule.delete", lock=True, details={"event": rule.event})


# --- matching ------------------------------------------------------------------------------------------
def _names(certificate: Certificate | None, subscriber: Subscriber | None) -> list[str]:
    source = certificate if certificate is not None else subscriber
    if source is None:
        return []
    return [n for n in [source.common_name, *(source.sans or [])] if n]


def rule_matches(
    rule: AlertRule, certificate: Certificate | None, subscriber: Subscriber | None = None
) -> bool:
    """Does ``rule`` cover this certificate (or, without one, this subscriber)? Same organization only."""
    subject = certificate if certificate is not None else subscriber
    if subject is None or subject.organization_id != rule.organization_id:
        return False
    if certificate is not None:
        ca_id, sub_id = certificate.ca_id, certificate.subscriber_id
    else:
        assert subscriber is not None  # subject is one of the two
        ca_id, sub_id = subscriber.ca_id, subscriber.pk
    if rule.ca_id is not None and ca_id != rule.ca_id:
        return False
    if rule.subscriber_id is not None and sub_id != rule.subscriber_id:
        return False
    if rule.name_patterns:
        names = _names(certificate, subscriber)
        if not any(name_matches(n, p) for n in names for p in rule.name_patterns):
            return False
    return True


# --- what an alert says --------------------------------------------------------------------------------
def _admin_url(certificate: Certificate | None, subscriber: Subscriber | None) -> str:
    base = settings.CERTMGR_BASE_URL
    if certificate is not None:
        return f"{base}/admin/pki/certificate/{certificate.pk}/change/"
    if subscriber is not None:
        return f"{base}/admin/pki/subscriber/{subscriber.pk}/change/"
    return ""


def build_alert(
    event: str,
    *,
    certificate: Certificate | None,
    subscriber: Subscriber | None,
    message: str = "",
    threshold: int | None = None,
    now: datetime | None = None,
    destinations: int = 0,
) -> tuple[str, str, dict[str, Any]]:
    """(subject, text, payload) of one alert. ``destinations``: how many sync destinations an issued
    certificate goes to (an issuance is not done before each confirmed it)."""
    now = now or timezone.now()
    label = (certificate.common_name or certificate.serial) if certificate is not None else ""
    if not label and subscriber is not None:
        label = subscriber.common_name or subscriber.name
    payload: dict[str, Any] = {
        "event": event,
        "organization": owner.organization_id if (owner := certificate or subscriber) is not None else None,
        "message": message,
        "url": _admin_url(certificate, subscriber),
    }
    if certificate is not None:
        payload["certificate"] = {
            "id": certificate.pk,
            "serial": certificate.serial,
            "common_name": certificate.common_name,
            "sans": certificate.sans,
            "not_after": certificate.not_after.isoformat(),
            "status": certificate.status,
            "ca": certificate.ca_id,
            "subscriber": certificate.subscriber_id,
        }
    if subscriber is not None:
        payload["subscriber"] = {"id": subscriber.pk, "name": subscriber.name}
    if event == Event.EXPIRING and certificate is not None:
        days_left = max(0, int((certificate.not_after - now).total_seconds() // 86400))
        payload["threshold_days"] = threshold
        payload["days_left"] = days_left
        subject = f"{label} expires in {days_left} day{'s' if days_left != 1 else ''}"
        detail = f"expires {certificate.not_after:%Y-%m-%d %H:%M %Z} (threshold: {threshold} days)"
    elif event == Event.ISSUED:
        verb = "renewed" if certificate is not None and certificate.renewed_from_id else "issued"
        subject = f"{label} {verb}" + (f"; {deployment.deploying_text(destinations)}" if destinations else "")
        detail = f"serial {certificate.serial}" if certificate else ""
        payload["deploying_to"] = destinations
    elif event == Event.REVOKED:
        reason = certificate.revocation_reason if certificate is not None else ""
        subject, detail = f"{label} revoked", f"serial {certificate.serial if certificate else ''} {reason}"
    elif event == Event.CLEANUP_FAILED:
        subject, detail = f"challenge record left behind: {label}", ""
    elif event == Event.SYNC_FAILED:
        subject, detail = f"sync failed: {label}", f"serial {certificate.serial}" if certificate else ""
    else:
        subject, detail = f"renewal failed: {label}", ""
    subject = f"[certmgr] {subject}"[:300]
    text = "\n".join(part for part in [subject, detail.strip(), message, payload["url"]] if part)
    payload["text"] = text
    return subject, text, payload


# --- raising events ------------------------------------------------------------------------------------
def _load(model, value):
    if value is None or isinstance(value, model):
        return value
    return model.objects.filter(pk=value).first()


def notify(event: str, certificate: Any = None, subscriber: Any = None, message: str = "") -> list[int]:
    """Queue the alerts of one event (``issued``, ``revoked``, ``renewal_failed``, ``cleanup_failed``,
    ``sync_failed``) and send them after commit.

    Called inside the service's transaction: the deliveries commit with the change (or vanish with its
    rollback) and a worker task is enqueued on commit; should the broker lose it, the ``deliver_alerts``
    schedule sends them anyway. ``certificate`` may be a row, an id, or a list of either (batches). Never
    raises: an alert problem must not undo an issuance or a revocation.
    """
    try:
        subjects, rules = _subjects_and_rules(event, certificate, subscriber)
        if not rules:  # the common case: no rule for this event; no savepoint, one query
            return []
        with transaction.atomic():  # a savepoint: a failure here leaves the caller's transaction usable
            ids = _queue_event(event, subjects, rules, message)
    except Exception:
        log.exception("alerts: could not queue %s alerts", event)
        return []
    if ids:
        transaction.on_commit(lambda: _enqueue(ids))
    return ids


def _subjects_and_rules(event: str, certificate: Any, subscriber: Any) -> tuple[list, list[AlertRule]]:
    """The (certificate, subscriber) pairs an event is about, and the enabled rules for it."""
    if event not in Event.values or event == Event.EXPIRING:
        raise ValueError(f"notify() takes an event other than expiring, not {event!r}")
    if isinstance(certificate, list | tuple | set):
        certs = [_load(Certificate, c) for c in certificate]
    else:
        certs = [_load(Certificate, certificate)]
    sub = _load(Subscriber, subscriber)
    subjects: list[tuple[Certificate | None, Subscriber | None]] = [
        (c, sub or (c.subscriber if c.subscriber_id else None)) for c in certs if c is not None
    ]
    if not subjects and sub is not None:
        subjects = [(None, sub)]
    if not subjects:
        return [], []
    owners = [c if c is not None else s for c, s in subjects]
    org_ids = {owner.organization_id for owner in owners if owner is not None}
    rules = list(
        AlertRule.objects.filter(organization_id__in=org_ids, event=event, enabled=True).prefetch_related(
            _enabled_channels()
        )
    )
    return subjects, rules


def _queue_event(event: str, subjects: list, rules: list[AlertRule], message: str) -> list[int]:
    now = timezone.now()
    rows = []
    # where issued certificates go: the syncs have not seen them yet (they do after this commit)
    going = deployment.planned([c for c, _ in subjects if c is not None]) if event == Event.ISSUED else {}
    for cert, s in subjects:
        seen: set[int] = set()  # one message per channel, however many rules lead there
        for rule in rules:
            if not rule_matches(rule, cert, s):
                continue
            for ch in _live(rule):
                if ch.pk in seen:
                    continue
                seen.add(ch.pk)
                subject, text, payload = build_alert(
                    event,
                    certificate=cert,
                    subscriber=s,
                    message=message,
                    now=now,
                    destinations=going.get(cert.pk, 0) if cert is not None else 0,
                )
                rows.append(_delivery(rule, ch, event, cert, s, None, subject, text, payload, now))
    created = AlertDelivery.objects.bulk_create(rows, batch_size=BATCH)
    return [d.pk for d in created]


def _live(rule: AlertRule) -> list[AlertChannel]:
    """The rule's enabled channels, prefetched by ``_enabled_channels()``."""
    return getattr(rule, "live_channels")  # noqa: B009 - set by Prefetch(to_attr=...), unknown to the stubs


def _enabled_channels():
    from django.db.models import Prefetch

    return Prefetch("channels", queryset=AlertChannel.objects.filter(enabled=True), to_attr="live_channels")


def _delivery(rule, ch, event, cert, sub, threshold, subject, text, payload, now) -> AlertDelivery:
    return AlertDelivery(
        organization_id=rule.organization_id,
        rule=rule,
        channel=ch,
        channel_label=ch.name,
        event=event,
        certificate=cert,
        subscriber=sub,
        threshold_days=threshold,
        subject=subject,
        message=text,
        payload=payload,
        next_attempt_at=now,
        created_at=now,
    )


def _enqueue(ids: list[int]) -> None:
    try:
        from django_q.tasks import async_task

        async_task("pki.tasks.deliver_alerts", ids, task_name="pki.deliver_alerts")
    except Exception:  # the schedule picks them up; a broker hiccup is not the caller's problem
        log.exception("alerts: could not enqueue delivery of %d alerts", len(ids))


# --- audit checkpoints ---------------------------------------------------------------------------------
def queue_audit_checkpoint(sender: Any, checkpoint: Any, **kwargs: Any) -> list[int]:
    """Send a signed audit checkpoint (certmgr.audit_checkpoints) to the channels of the organization's
    ``audit_checkpoint`` rules: one more copy outside the database. Never raises into the checkpoint job."""
    if checkpoint.organization is None:
        return []
    try:
        rules = list(
            AlertRule.objects.filter(
                organization_id=checkpoint.organization, event=Event.AUDIT_CHECKPOINT, enabled=True
            ).prefetch_related(_enabled_channels())
        )
        now = timezone.now()
        signed = json.loads(checkpoint.to_json())
        subject = f"[certmgr] audit checkpoint: chain {checkpoint.chain} at sequence {checkpoint.sequence}"
        text = "\n".join([subject, json.dumps(signed, sort_keys=True)])
        event = Event.AUDIT_CHECKPOINT
        payload = {"event": event.value, "organization": checkpoint.organization}
        payload |= {"checkpoint": signed, "text": text}
        rows, seen = [], set()
        for rule in rules:
            for ch in _live(rule):
                if ch.pk not in seen:
                    seen.add(ch.pk)
                    rows.append(
                        _delivery(
                            rule, ch, Event.AUDIT_CHECKPOINT, None, None, None, subject, text, payload, now
                        )
                    )
        ids = [d.pk for d in AlertDelivery.objects.bulk_create(rows)]
    except Exception:
        log.exception("alerts: could not queue the audit checkpoint of chain %s", checkpoint.chain)
        return []
    if ids:
        transaction.on_commit(lambda: _enqueue(ids))
    return ids


# --- expiry --------------------------------------------------------------------------------------------
_EXPIRY_FIELDS = (
    "id", "organization_id", "ca_id", "subscriber_id", "serial", "common_name", "sans", "not_after", "status",
    "revocation_reason", "subscriber__id", "subscriber__name", "subscriber__organization_id",
)  # fmt: skip


def queue_expiry_alerts(
    report: JobReport, *, now: datetime | None = None, progress: Callable | None = None
) -> int:
    """Create the expiry deliveries that are due: for each certificate a rule covers, the tightest threshold
    it has reached (a certificate first seen 10 days before expiry gets the 14-day alert, not 30 and 14).
    Renewed certificates are skipped: their successor is what matters. Returns how many were queued."""
    now = now or timezone.now()
    queued = 0
    rules = (
        AlertRule.objects.filter(event=Event.EXPIRING, enabled=True)
        .prefetch_related(_enabled_channels())
        .order_by("organization_id", "pk")
    )
    for rule in rules:
        if not _live(rule):
            continue
        thresholds = sorted(rule.thresholds or default_thresholds())
        certs = Certificate.objects.filter(
            organization_id=rule.organization_id,
            status=Certificate.Status.ACTIVE,
            not_after__gt=now,
            not_after__lte=now + timedelta(days=thresholds[-1]),
            renewed_by__isnull=True,
        )
        if rule.ca_id:
            certs = certs.filter(ca_id=rule.ca_id)
        if rule.subscriber_id:
            certs = certs.filter(subscriber_id=rule.subscriber_id)
        certs = certs.select_related("subscriber").only(*_EXPIRY_FIELDS).order_by("not_after", "pk")
        batch: list[AlertDelivery] = []
        for cert in certs.iterator(BATCH):
            if rule.name_patterns and not rule_matches(rule, cert):
                continue
            days_left = (cert.not_after - now) / timedelta(days=1)
            threshold = next(t for t in thresholds if days_left <= t)
            sub = cert.subscriber if cert.subscriber_id else None
            subject, text, payload = build_alert(
                Event.EXPIRING, certificate=cert, subscriber=sub, threshold=threshold, now=now
            )
            for ch in _live(rule):
                batch.append(
                    _delivery(rule, ch, Event.EXPIRING, cert, sub, threshold, subject, text, payload, now)
                )
            if len(batch) >= BATCH:
                queued += _insert_new(batch, progress)
                batch = []
        queued += _insert_new(batch, progress)
    report.add("queued", queued)
    return queued


def _insert_new(rows: list[AlertDelivery], progress: Callable | None) -> int:
    """Insert the rows not already there. The unique constraint settles races between concurrent runs."""
    if not rows:
        return 0
    existing = set(
        AlertDelivery.objects.filter(
            channel_id__in={r.channel_id for r in rows},
            certificate_id__in={r.certificate_id for r in rows},
            threshold_days__isnull=False,
        ).values_list("channel_id", "certificate_id", "threshold_days")
    )
    new = [r for r in rows if (r.channel_id, r.certificate_id, r.threshold_days) not in existing]
    AlertDelivery.objects.bulk_create(new, ignore_conflicts=True)
    if progress:
        for r in new:
            progress(f"queued: {r.subject} -> {r.channel_label}")
    return len(new)


def send_expiry_alerts(
    report: JobReport, *, now: datetime | None = None, progress: Callable | None = None
) -> None:
    """The scheduled job: queue what is due, then send every pending delivery that is due (retries too)."""
    queue_expiry_alerts(report, now=now, progress=progress)
    deliver_due(report, progress=progress)


# --- sending -------------------------------------------------------------------------------------------
class DeliveryError(Exception):
    pass


def signature(secret: str, body: bytes) -> str:
    """The value of X-Certmgr-Signature: ``sha256=`` and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _send(delivery: AlertDelivery, channel: AlertChannel) -> None:
    if channel.kind == AlertChannel.Kind.EMAIL:
        connection = mail.get_connection(fail_silently=False, timeout=settings.CERTMGR_OUTBOUND_TIMEOUT)
        sent = mail.EmailMessage(
            subject=delivery.subject,
            body=delivery.message,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=channel.recipients,
            connection=connection,
        ).send()
        if not sent:
            raise DeliveryError("the mail server accepted no message")
        return
    data = {"text": delivery.message} if channel.slack else delivery.payload
    body = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(channel.secret, body)}
    with outbound.session() as session:
        response = session.post(
            channel.url,
            data=body,
            headers=headers,
            timeout=settings.CERTMGR_OUTBOUND_TIMEOUT,
            allow_redirects=False,
        )
    if not 200 <= response.status_code < 300:
        raise DeliveryError(f"HTTP {response.status_code}: {response.text[:200]}")


def _claim(pk: int, now: datetime) -> bool:
    """Take a pending, due delivery for LEASE: only one worker sends it, a dead worker's claim expires."""
    return bool(
        AlertDelivery.objects.filter(pk=pk, status=AlertDelivery.Status.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .update(next_attempt_at=now + LEASE)
    )


def deliver(pk: int, *, now: datetime | None = None) -> str | None:
    """Send one delivery if it is pending and due. Returns its new status, or None if not ours to send."""
    now = now or timezone.now()
    if not _claim(pk, now):
        return None
    delivery = AlertDelivery.objects.select_related("channel").get(pk=pk)
    channel = delivery.channel
    error = ""
    try:
        if channel is None:
            raise DeliveryError("channel deleted")
        if not channel.enabled:
            raise DeliveryError("channel disabled")
        _send(delivery, channel)
    except Exception as exc:  # any failure is recorded on the row, never raised into the sweep
        error = str(exc) or type(exc).__name__
    delivery.attempts += 1
    finished = timezone.now()
    if not error:
        delivery.status, delivery.sent_at, delivery.next_attempt_at = (
            AlertDelivery.Status.SENT,
            finished,
            None,
        )
        delivery.last_error = ""
    elif delivery.attempts >= max_attempts() or channel is None:
        delivery.status, delivery.next_attempt_at = AlertDelivery.Status.FAILED, None
        delivery.last_error = error[:2000]
    else:
        delivery.next_attempt_at = finished + timedelta(seconds=_retry_delay(delivery.attempts))
        delivery.last_error = error[:2000]
    delivery.save(update_fields=["status", "attempts", "last_error", "next_attempt_at", "sent_at"])
    return delivery.status


def deliver_many(
    ids: Iterable[int], report: JobReport | None = None, progress: Callable | None = None
) -> None:
    report = report or JobReport()
    for pk in ids:
        status = deliver(pk)
        if status is None:
            continue
        row = AlertDelivery.objects.only("subject", "channel_label", "last_error", "next_attempt_at").get(
            pk=pk
        )
        if status == AlertDelivery.Status.SENT:
            report.add("sent")
            if progress:
                progress(f"sent: {row.subject} -> {row.channel_label}")
            continue
        report.add("failed" if status == AlertDelivery.Status.FAILED else "retrying")
        when = f", next attempt {row.next_attempt_at:%Y-%m-%d %H:%M:%S %Z}" if row.next_attempt_at else ""
        report.error(f"delivery {pk} ({row.subject} -> {row.channel_label}): {row.last_error}{when}")
        if progress:
            progress(f"{status}: {row.subject} -> {row.channel_label}: {row.last_error}{when}")


def due_ids(*, now: datetime | None = None, limit: int = 5000) -> list[int]:
    now = now or timezone.now()
    return list(
        AlertDelivery.objects.filter(status=AlertDelivery.Status.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )


def deliver_due(report: JobReport, *, progress: Callable | None = None) -> None:
    deliver_many(due_ids(), report, progress)


def retry_delivery(delivery: AlertDelivery, *, actor: Actor) -> AlertDelivery:
    """An operator's "retry now": a pending or failed delivery is due at once (failed ones get one more
    round of attempts); sent on commit."""
    actor = as_actor(actor)
    with audit.failures(actor, "alert_delivery.retry", delivery):
        require(actor, Action.MANAGE, delivery.organization_id)
        with transaction.atomic():
            row = AlertDelivery.objects.select_for_update().get(pk=delivery.pk)
            if row.status == AlertDelivery.Status.SENT:
                raise Conflict("this alert was already sent")
            if row.channel_id is None:
                raise Conflict("this alert's channel was deleted")
            if row.status == AlertDelivery.Status.FAILED:
                row.attempts = 0
            row.status, row.next_attempt_at = AlertDelivery.Status.PENDING, timezone.now()
            row.save(update_fields=["status", "attempts", "next_attempt_at"])
            audit.record(actor, "alert_delivery.retry", row, channel=row.channel_label, event=row.event)
            transaction.on_commit(lambda: _enqueue([row.pk]))
    return row
