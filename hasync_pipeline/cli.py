"""`ha-sync`: one sync of one folder pair in one direction, the seed's CLI.

Exit codes (documented in the README):
  0 success (also: a dry-run that was already current)
  1 failure (the run could not complete)
  2 bad usage
  3 partial failure (some operations failed; the rest was applied)
  4 refused by a safety check (nothing was changed)
  5 another run holds the lease (nothing was changed; not a failure)
  6 interrupted (SIGTERM/SIGINT; lease released, no temp files left)
"""

from __future__ import annotations

import argparse
import os
import sys

from .engine.options import SyncOptions
from .engine.walk import start_walks
from .settings import DEFAULTS, validate_pair_name

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL, EXIT_REFUSED, EXIT_LEASE_HELD, EXIT_INTERRUPTED = range(7)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ha-sync", description="One-way, newest-wins sync of one folder pair (run both directions to "
        "keep two servers in step). Nothing is ever lost: replaced and deleted files go to "
        "<dest>/.hasync-trash/.", epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="source directory (absolute path)")
    p.add_argument("--dest", required=True, help="destination directory (absolute path)")
    p.add_argument("--pair", required=True, type=_pair_name, help='pair name, e.g. "media"; lease ha-sync-<pair>')
    p.add_argument("--direction", default="fwd", help='label for logs, e.g. "dell-to-hp" (default: fwd)')
    p.add_argument("--db-dsn", default=None, help="MySQL DSN (user:pass@tcp(host:3306)/db) or SQLAlchemy URL "
                   "(default: $HA_SYNC_DB_DSN, else an embedded SQLite file)")
    p.add_argument("--lock-ttl", type=_positive_int, default=DEFAULTS.lock_ttl,
                   help="lease TTL in seconds before it is considered stale (default: %(default)s)")
    p.add_argument("--log-dir", default=DEFAULTS.log_dir, help="directory for opslog files (default: %(default)s)")
    p.add_argument("--log-retain-days", type=_non_negative_float, default=DEFAULTS.log_retain_days,
                   help="delete opslogs older than N days (default: %(default)s)")
    p.add_argument("--mtime-threshold", type=_non_negative_float, default=DEFAULTS.mtime_threshold,
                   help="seconds of tolerance for mtime equality (default: %(default)s)")
    p.add_argument("--delete-missing", action="store_true", help="delete dest files not present in src")
    p.add_argument("--workers", type=_positive_int, default=DEFAULTS.workers,
                   help="concurrent file workers (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="compute and record what would sync; change nothing")
    p.add_argument("--verbose", action="store_true", help="print every operation")
    p.add_argument("--max-delete", type=_percent, default=DEFAULTS.max_delete_percent,
                   help="refuse a run deleting more than this percent of the destination's files "
                        "(default: %(default)s)")
    p.add_argument("--trash-retain-days", type=_non_negative_float, default=DEFAULTS.trash_retain_days,
                   help="keep replaced/deleted files this many days in .hasync-trash (0: delete for real; "
                        "default: %(default)s)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="skip names (or, with a '/', paths) matching GLOB; repeatable")
    return p


def _pair_name(value: str) -> str:
    try:
        return validate_pair_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return n


def _non_negative_float(value: str) -> float:
    try:
        n = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not n >= 0 or n == float("inf"):
        raise argparse.ArgumentTypeError(f"{value} must be a finite number >= 0")
    return n


def _percent(value: str) -> float:
    n = _non_negative_float(value)
    if n > 100:
        raise argparse.ArgumentTypeError(f"{value} is not a percentage (0-100)")
    return n


def options_from_args(args: argparse.Namespace) -> SyncOptions:
    return SyncOptions(dry_run=args.dry_run, delete_missing=args.delete_missing, workers=args.workers,
                       mtime_threshold=args.mtime_threshold, max_delete_percent=args.max_delete,
                       trash_retain_days=args.trash_retain_days, excludes=tuple(args.exclude))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    opts = options_from_args(args)
    # the walks start first, each in its own process: reading only, they are safe before the lease, and the
    # imports, lease and database set-up below then overlap them (a third of a no-change run otherwise)
    walks = start_walks(os.path.abspath(args.src), os.path.abspath(args.dest), opts)
    from .service import run_from_cli  # imported late: --help stays instant
    return run_from_cli(args, opts, sys.stdout, sys.stderr, walks)


if __name__ == "__main__":
    sys.exit(main())
