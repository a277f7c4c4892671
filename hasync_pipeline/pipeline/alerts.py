"""Alerts by webhook and/or e-mail, at most one per key (a pair) per hour, like lsyncd's rate-limited mail.

Configured by the settings alert_webhook (POSTed JSON {"subject", "text", "key"}) and/or smtp_host [smtp_port,
smtp_from, alert_email_to].  With neither set, alerts only go to the Dagster log.

When each key was last alerted is kept in the Dagster instance's own key-value store (its run storage: the
cluster's MySQL), not in a file of the daemon's pod, which a pod restart lost - and with it the rate limit.
"""

from __future__ import annotations

import json
import smtplib
import time
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Protocol

import dagster as dg

from ..settings import Settings

MIN_INTERVAL = 3600
_KEY_PREFIX = "ha-sync/alerted/"


class AlertLog(Protocol):
    """When each alert key was last sent (epoch seconds)."""

    def last_sent(self, key: str) -> float | None: ...
    def sent(self, key: str, when: float) -> None: ...


class InstanceAlertLog:
    """AlertLog in the Dagster instance's key-value store: it survives the daemon's restarts."""

    def __init__(self, instance: dg.DagsterInstance):
        self.storage = instance.run_storage

    def last_sent(self, key: str) -> float | None:
        value = self.storage.get_cursor_values({_KEY_PREFIX + key}).get(_KEY_PREFIX + key)
        try:
            return float(value) if value else None
        except ValueError:
            return None

    def sent(self, key: str, when: float) -> None:
        self.storage.set_cursor_values({_KEY_PREFIX + key: repr(when)})


@dataclass
class Alerter:
    log: AlertLog
    webhook: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 25
    mail_from: str = "ha-sync@localhost"
    mail_to: list[str] = field(default_factory=list)
    min_interval: float = MIN_INTERVAL

    @classmethod
    def from_settings(cls, settings: Settings, instance: dg.DagsterInstance) -> Alerter:
        return cls(
            InstanceAlertLog(instance),
            webhook=settings.alert_webhook or None,
            smtp_host=settings.smtp_host or None,
            smtp_port=settings.smtp_port,
            mail_from=settings.smtp_from,
            mail_to=list(settings.alert_email_to),
        )

    @property
    def configured(self) -> bool:
        return bool(self.webhook or (self.smtp_host and self.mail_to))

    def send(self, key: str, subject: str, text: str, now: float | None = None) -> bool:
        """Deliver unless `key` was alerted less than min_interval ago.  True if delivered."""
        now = time.time() if now is None else now
        if not self.configured:
            return False
        last = self.log.last_sent(key)
        if last is not None and now - last < self.min_interval:
            return False
        if self.webhook:
            body = json.dumps({"subject": subject, "text": text, "key": key}).encode()
            req = urllib.request.Request(self.webhook, body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                resp.read()
        if self.smtp_host and self.mail_to:
            msg = EmailMessage()
            msg["Subject"], msg["From"], msg["To"] = subject, self.mail_from, ", ".join(self.mail_to)
            msg.set_content(text)
            with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=10) as smtp:
                smtp.send_message(msg)
        self.log.sent(key, now)
        return True
