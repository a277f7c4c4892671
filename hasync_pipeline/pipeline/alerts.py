"""Alerts by webhook and/or e-mail, at most one per key (a pair) per hour, like lsyncd's rate-limited mail.

Configured by the settings alert_webhook (POSTed JSON {"subject", "text", "key"}) and/or smtp_host [smtp_port,
smtp_from, alert_email_to].
With neither set, alerts only go to the Dagster log.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import smtplib
import time
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage

from ..settings import Settings

MIN_INTERVAL = 3600


@dataclass
class Alerter:
    webhook: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 25
    mail_from: str = "ha-sync@localhost"
    mail_to: list[str] = field(default_factory=list)
    state_path: str = ""
    min_interval: float = MIN_INTERVAL

    @classmethod
    def from_settings(cls, settings: Settings) -> Alerter:
        return cls(
            webhook=settings.alert_webhook or None,
            smtp_host=settings.smtp_host or None,
            smtp_port=settings.smtp_port,
            mail_from=settings.smtp_from,
            mail_to=list(settings.alert_email_to),
            state_path=os.path.join(settings.state_dir, "alerts.json"),
        )

    @property
    def configured(self) -> bool:
        return bool(self.webhook or (self.smtp_host and self.mail_to))

    def send(self, key: str, subject: str, text: str, now: float | None = None) -> bool:
        """Deliver unless `key` was alerted less than min_interval ago.  True if delivered."""
        now = time.time() if now is None else now
        if not self.configured:
            return False
        with self._state() as state:
            if now - state.get(key, 0) < self.min_interval:
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
            state[key] = now
        return True

    @contextlib.contextmanager
    def _state(self):
        os.makedirs(os.path.dirname(self.state_path), exist_ok=True)
        with open(self.state_path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            try:
                state = json.loads(f.read() or "{}")
            except ValueError:
                state = {}
            yield state
            f.seek(0)
            f.truncate()
            f.write(json.dumps(state))
