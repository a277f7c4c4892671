"""`ha-sync restore`: put a version kept in a pair folder's trash back in place (engine/restore.py), under the
pair's lease, recorded in the audit trail like any operation (reason `restored`).

    ha-sync restore --pair media --side hp movies/holiday.txt            the newest kept version
    ha-sync restore --pair media --side hp movies/holiday.txt --at '2026-12-01 18:00'
    ha-sync restore --pair media --side hp movies/holiday.txt --list     what is kept, nothing changed
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from datetime import UTC, datetime

from .audit import AuditStore, AuditTrail, DsnError
from .engine.outcome import EXIT_FAILED, EXIT_LEASE_HELD, EXIT_OK, EXIT_REFUSED, EXIT_USAGE
from .engine.paths import display
from .engine.plan import COPY, RESTORED, Op
from .engine.ports import AuditUnwritable, LeaseHeld
from .engine.report import SyncReport
from .engine.restore import NothingToRestore, Version, choose, restore, versions
from .engine.transfer import describe_error
from .engine.trash import new_stamp
from .engine.walk import FILE, Entry
from .engine.workers import OpResult
from .lease import acquire_for_pair
from .pairs import RegistryError, load_registry, validate_pair_name
from .settings import SettingError, Settings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ha-sync restore",
        description="Put a version kept in the trash back as the newest version of its path (the file there "
        "now goes to the trash); the next sync carries it to the other side.",
        epilog=(__doc__ or "").split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--pair", required=True, type=validate_pair_name, help='pair name, e.g. "media"')
    p.add_argument("--side", required=True, choices=("dell", "hp"), help="whose trash, and where it goes back")
    p.add_argument("path", help="the path inside the pair folder, e.g. movies/holiday.txt")
    p.add_argument("--at", type=_when, help="the newest version trashed at or before this UTC time")
    p.add_argument("--list", action="store_true", help="list the kept versions; change nothing")
    return p


def _when(text: str) -> datetime:
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(f"{text!r} is not a time like '2026-12-01 18:00' (UTC)")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        registry = load_registry()
        settings = registry.settings_for(args.pair)
        store = AuditStore(settings.db_dsn, settings.db_timeout)
    except (SettingError, RegistryError, DsnError) as exc:
        print(f"ha-sync restore: {exc}", file=sys.stderr)
        return EXIT_USAGE
    root = registry.get(args.pair).folder(args.side, settings)
    rel = os.fsencode(args.path).strip(b"/")
    if not rel or any(part in (b"", b".", b"..") for part in rel.split(b"/")):
        print(f"ha-sync restore: {args.path!r} is not a path inside the pair folder; nothing changed", file=sys.stderr)
        return EXIT_USAGE
    try:
        found = versions(root, rel)
        if args.list:
            for v in found:
                mtime = datetime.fromtimestamp(v.mtime_ns / 1e9, UTC)
                trashed = f"{v.trashed_at:%Y-%m-%d %H:%M:%S} UTC"
                print(f"{trashed}  {v.size:>12} B  modified {mtime:%Y-%m-%d %H:%M:%S}  {v.stamp}")
            return EXIT_OK
        version = choose(found, args.at)
    except NothingToRestore as exc:
        print(f"ha-sync restore: {display(rel)} in {root}: {exc}; nothing changed", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as exc:
        print(f"ha-sync restore: cannot read the trash of {root}: {describe_error(exc)}", file=sys.stderr)
        return EXIT_FAILED
    run_id = uuid.uuid4().hex
    try:
        lease = acquire_for_pair(args.pair, settings.lock_ttl, run_id, settings)
    except LeaseHeld as exc:
        print(f"ha-sync restore: {exc}; nothing changed", file=sys.stderr)
        return EXIT_LEASE_HELD
    try:
        return _restore_recorded(store, settings, args, root, rel, version, run_id)
    finally:
        lease.release()
        store.dispose()


def _restore_recorded(
    store: AuditStore,
    settings: Settings,
    args: argparse.Namespace,
    root: str,
    rel: bytes,
    version: Version,
    run_id: str,
) -> int:
    """The restore itself, recorded: an opslog (and an audit iteration) with its one operation."""
    trail = AuditTrail(
        store,
        settings.log_dir,
        run_id=run_id,
        pair=args.pair,
        direction=f"restore-{args.side}",
        src=f"{root}/.hasync-trash/{version.stamp}",
        dest=root,
        dry_run=False,
    )
    try:
        trail.check()
    except AuditUnwritable as exc:
        print(f"ha-sync restore: {exc}; nothing changed", file=sys.stderr)
        return EXIT_REFUSED
    trail.begin()
    kept = Entry(FILE, version.size, version.mtime_ns, 0, 0, 0)
    report = SyncReport()
    started = datetime.now(UTC).timestamp()
    try:
        stamp = new_stamp(run_id, max(settings.trash_retain_days, 1))
        assert stamp is not None
        copied, replaced = restore(root, rel, version, stamp, preserve_owner=os.geteuid() == 0)
        before = Entry(FILE, replaced, 0, 0, 0, 0) if replaced is not None else None
        op = Op(COPY, rel, kept, before, f"restored from the trash ({version.stamp})", reason=RESTORED)
        result = OpResult(op, True, None, copied, started)
    except OSError as exc:
        op = Op(COPY, rel, kept, None, f"restore from the trash ({version.stamp})", reason=RESTORED)
        result = OpResult(op, False, describe_error(exc), 0, started)
    result.ended = datetime.now(UTC).timestamp()
    report.add(result)
    trail.record(result)
    report.stop_clock()
    trail.finish(report, "success" if result.ok else "failed", None if result.ok else result.error)
    for warning in trail.warnings:
        print(f"ha-sync restore: {warning}", file=sys.stderr)
    if not result.ok:
        print(f"ha-sync restore: {display(rel)}: {result.error}; nothing changed", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"restored {display(rel)} in {root} from the version trashed {version.trashed_at:%Y-%m-%d %H:%M:%S} UTC"
        + ("; the version it replaced is in the trash" if replaced is not None else "")
    )
    return EXIT_OK
