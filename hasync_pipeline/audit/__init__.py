"""Audit trail: opslog JSONL files (the source of truth) flushed exactly once into sync_iterations /
sync_operations on MySQL/MariaDB or SQLite."""

from .dsn import DsnError, redact, to_url
from .flush import expire_old, expire_old_and_warn, flush_file, flush_pending
from .records import decode_path, encode_path
from .store import AuditStore, AuditUnavailable, FeedTip
from .trail import ALREADY_CURRENT, AuditTrail, plan_signature

__all__ = [
    "DsnError",
    "redact",
    "to_url",
    "expire_old",
    "expire_old_and_warn",
    "flush_file",
    "flush_pending",
    "decode_path",
    "encode_path",
    "AuditStore",
    "AuditUnavailable",
    "FeedTip",
    "ALREADY_CURRENT",
    "AuditTrail",
    "plan_signature",
]
