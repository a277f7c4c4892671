"""`ha-sync`: one sync of one folder pair in one direction, the seed's CLI.

Exit codes (documented in the README):
  0 success (also: a dry-run that was already current)
  1 failure (the run could not complete)
  2 bad usage (a flag, a setting, the database address or the pairs file)
  3 partial failure (some operations failed or entries were skipped; the rest was applied)
  4 refused by a safety check (nothing was changed)
  5 another run holds the lease (nothing was changed; not a failure)
  6 interrupted (SIGTERM/SIGINT; lease released, no temp files left)
"""

from __future__ import annotations

import argparse
import os
import sys

from .engine.outcome import EXIT_USAGE
from .engine.walk import start_walks
from .pairs import RegistryError, load_registry, validate_pair_name
from .settings import SettingError, Settings, add_flags, flag_values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ha-sync",
        description="One-way sync of one folder pair (run both directions to keep two servers "
        "in step). A dry-run until you say --no-dry-run. Nothing is ever lost: replaced and deleted files go to "
        "<dest>/.hasync-trash/.",
        epilog=(__doc__ or "").split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--src", required=True, help="source directory (absolute path)")
    p.add_argument("--dest", required=True, help="destination directory (absolute path)")
    p.add_argument(
        "--pair",
        required=True,
        type=_pair_name,
        help='pair name, e.g. "media"; lease ha-sync-<pair>; its pairs.toml settings apply',
    )
    p.add_argument("--direction", default="fwd", help='label for logs, e.g. "dell-to-hp" (default: fwd)')
    add_flags(p)
    return p


def _pair_name(value: str) -> str:
    try:
        return validate_pair_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The pair's settings with the flags given on top (raises SettingError / RegistryError)."""
    return load_registry().settings_for(args.pair, overrides=flag_values(args))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except (SettingError, RegistryError) as exc:
        print(f"ha-sync: {exc}", file=sys.stderr)
        return EXIT_USAGE
    opts = settings.sync_options()
    # the walks start first, each in its own process: reading only, they are safe before the lease, and the
    # imports, lease and database set-up below then overlap them (a third of a no-change run otherwise)
    walks = start_walks(os.path.abspath(args.src), os.path.abspath(args.dest), opts)
    from .cli_run import run_from_cli  # imported late: --help stays instant

    return run_from_cli(args, settings, opts, sys.stdout, sys.stderr, walks)


if __name__ == "__main__":
    sys.exit(main())
