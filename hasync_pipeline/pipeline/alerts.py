"""Alerts by webhook and/or e-mail, at most one per key (a pair) per hour, like lsyncd's rate-limited mail.

Configured by the settings alert_webhook (POSTed JSON {"subject", "text", "key"}) and/or smtp_host [smtp_port,
smtp_from, alert_email_to].  With neither set, alerts only go to the Dagster log.

When each key was last alerted is kept in the audit database (alerts_sent), which the sensors read anyway:
not in a file of the daemon's pod (a restart lost it, and with it the rate limit), nor in the Dagster
instance's key-value store (reachable only through its storage internals, which Dagster does not promise to
keep).  While the database does not answer, the process's own memory keeps the limit.
"""

from __future__ import annotations

import json
import smtplib
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import ClassVar, Protocol

from ..audit import AuditStore, AuditUnavailable, DsnError
from ..settings import Settings

MIN_INTERVAL = 3600


class AlertLog(Protocol):
    """When each alert key was last sent (epoch seconds)."""

    def last_sent(self, key: str) -> float | None: ...
    def sent(self, key: str, when: float) -> None: ...


class AuditAlertLog:
    """AlertLog in the audit database, with this process's memory beside it (the later of the two counts): a
    dead database neither stops an alert (the one saying so included) nor repeats it every tick."""

    memory: ClassVar[dict[str, float]] = {}  # per process: the daemon's sensors share it

    def __init__(self, dsn: str, timeout: float):
        self.dsn, self.timeout = dsn, timeout

    def last_sent(self, key: str) -> float | None:
        stored = None
        try:
            store = AuditStore(self.dsn, self.timeout)
            try:
                when = store.alert_sent_at(key)
            finally:
                store.dispose()
            stored = when.timestamp() if when is not None else None
        except (AuditUnavailable, DsnError):
            pass
        known = [t for t in (stored, self.memory.get(key)) if t is not None]
        return max(known) if known else None

    def sent(self, key: str, when: float) -> None:
        self.memory[key] = when
        try:
            store = AuditStore(self.dsn, self.timeout)
            try:
                store.record_alert(key, datetime.fromtimestamp(when, UTC))
            finally:
                store.dispose()
        except (AuditUnavailable, DsnError):
            pass


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
    def from_settings(cls, settings: Settings) -> Alerter:
        return cls(
            AuditAlertLog(settings.db_dsn, settings.db_timeout),
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
