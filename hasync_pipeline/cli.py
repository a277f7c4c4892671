"""`ha-sync`: one sync of one folder pair in one direction, the seed's CLI.

Exit codes (documented in the README):
  0 success (also: a dry-run that was already current)
  1 failure (the run could not complete)
  2 bad usage (a flag, a setting, the database address or the pairs file)
  3 partial failure (some operations failed or entries were skipped; the rest was applied)
  4 refused by a safety check or an unusable log folder (nothing was changed)
  5 another run holds the lease (nothing was changed; not a failure)
  6 interrupted (SIGTERM/SIGINT; lease released; temp files removed, or by the next run if a share hung)
  7 done, with conflicts (both versions kept, one renamed)
  8 a server stopped answering (its share hangs): changes stopped, lease released; the pair recovers by itself
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

from .engine.liveness import Board
from .engine.outcome import EXIT_INTERRUPTED, EXIT_USAGE
from .engine.ports import Interrupted
from .engine.walk import start_walks
from .pairs import RegistryError, load_registry, validate_pair_name
from .settings import SettingError, Settings, add_flags, flag_values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ha-sync",
        description="One-way sync of one folder pair (run both directions to keep two servers "
        "in step). A dry-run until you say --no-dry-run. Nothing is ever lost: replaced and deleted files go to "
        "<dest>/.hasync-trash/; `ha-sync restore --help` puts one back.",
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
    p.add_argument(
        "--json",
        action="store_true",
        help="print only a JSON summary on stdout (for scripts); warnings still go to stderr",
    )
    p.add_argument("--version", action="version", version=f"ha-sync {_version()}")
    add_flags(p)
    return p


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hasync-pipeline")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _pair_name(value: str) -> str:
    try:
        return validate_pair_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def job_arguments(argv: list[str]) -> list[str]:
    """`job <pair>_<direction> [flags]` -> the flags with --src/--dest/--pair/--direction of that job, the
    folders from the pair registry (what the systemd units run)."""
    from .pairs import DIRECTIONS

    if not argv:
        raise ValueError("name a job, e.g. media_dell_to_hp")
    pair, _, direction = argv[0].partition("_")
    if direction not in DIRECTIONS:
        raise ValueError(f"{argv[0]!r} is not <pair>_dell_to_hp or <pair>_hp_to_dell")
    registry = load_registry()
    src, dest = registry.get(validate_pair_name(pair)).endpoints(direction, registry.settings_for(pair))
    return ["--src", src, "--dest", dest, "--pair", pair, "--direction", direction, *argv[1:]]


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The pair's settings with the flags given on top (raises SettingError / RegistryError)."""
    return load_registry().settings_for(args.pair, overrides=flag_values(args))


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_SIGNALLED: list[str] = []  # the stop signals received, by name
_RUN_ENDED: list[bool] = []  # the run's outcome is decided: a signal now changes nothing


def _on_stop_signal(signum: int, _frame: FrameType | None) -> None:
    """The first SIGTERM/SIGINT stops the run (exit 6); a second one while it cleans up, or any after its
    outcome is decided, is only noted (a second Ctrl-C once printed a traceback)."""
    _SIGNALLED.append(signal.Signals(signum).name)
    if len(_SIGNALLED) == 1 and not _RUN_ENDED:
        raise Interrupted(_SIGNALLED[-1])


def stop_if_signalled() -> None:
    """Raise again a signal whose exception was swallowed (it can land in an at-fork hook or a finalizer,
    where Python only prints it): the engine polls this between files."""
    if _SIGNALLED and not _RUN_ENDED:
        raise Interrupted(_SIGNALLED[-1])


class SignalWatch:
    """The last resort behind the handler above: a thread that sees each stop signal as it arrives (through
    `signal.set_wakeup_fd`, written by the C-level handler whatever the main thread is doing) and, if the run
    has not ended GRACE seconds later - its main thread stuck where no Python code runs, e.g. a share whose
    server died - kills the run's children, gives its lease back and exits with code 6.  The run's own
    waits are all interruptible (engine/liveness.py), so this is for what was missed."""

    GRACE = 3.0  # seconds: within the 5 s a run blocked on a dead share has to exit after SIGTERM
    RELEASE = 1.5  # seconds the lease's release may take then (a hung Lease API gets no more)

    def __init__(self) -> None:
        self._read, write = os.pipe()
        os.set_blocking(write, False)
        self._write = write
        self._previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        self.ended = threading.Event()
        self.session: Any = None  # the run's SyncSession, once there is one
        threading.Thread(target=self._watch, name="signal-watch", daemon=True).start()

    def _watch(self) -> None:
        try:
            data = os.read(self._read, 64)
        except OSError:
            return  # closed: the run ended
        if not data or self.ended.wait(self.GRACE):
            return
        name = signal.Signals(data[0]).name if data[0] in signal.valid_signals() else "a signal"
        session = self.session
        if session is not None:
            releasing = threading.Thread(target=session.abandon, daemon=True)
            releasing.start()
            releasing.join(self.RELEASE)
        message = (
            f"ha-sync: interrupted by {name}; the run did not stop within {self.GRACE:g} s (a share not "
            "answering?): its processes were killed and its lease released; the next run goes on from here\n"
        )
        os.write(2, message.encode())
        os._exit(EXIT_INTERRUPTED)

    def close(self) -> None:
        self.ended.set()
        signal.set_wakeup_fd(self._previous)
        os.close(self._write)
        os.close(self._read)


def main(argv: list[str] | None = None) -> int:
    """Signal handling first thing: a SIGTERM at any moment of a run ends it with exit code 6, never 143."""
    _SIGNALLED.clear()
    _RUN_ENDED.clear()
    previous = {sig: signal.signal(sig, _on_stop_signal) for sig in _STOP_SIGNALS}
    watch = SignalWatch()
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # a parent may have blocked them
        code = _main(argv, watch)
        _RUN_ENDED.append(True)
        return code
    except Interrupted as exc:  # before the run's session took over: nothing was changed
        _RUN_ENDED.append(True)
        print(f"ha-sync: interrupted by {exc} before any change", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        watch.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(argv: list[str] | None, watch: SignalWatch) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["watch"]:  # `ha-sync watch ROOT...`: keep the change logs of this server's roots
        from .cli_watch import main as watch_roots

        return watch_roots(argv[1:])
    if argv[:1] == ["follow"]:  # `ha-sync follow --pair P`: run the pair's jobs as its change logs move
        from .cli_follow import main as follow

        return follow(argv[1:])
    if argv[:1] == ["restore"]:  # `ha-sync restore ...`: a trashed version back in place
        from .cli_restore import main as restore

        return restore(argv[1:])
    if argv[:1] == ["job"]:  # `ha-sync job media_dell_to_hp [flags]`: a Dagster job's pair and direction
        try:
            argv = job_arguments(argv[1:])
        except (ValueError, SettingError, RegistryError) as exc:
            print(f"ha-sync job: {exc}", file=sys.stderr)
            return EXIT_USAGE
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except (SettingError, RegistryError) as exc:
        print(f"ha-sync: {exc}", file=sys.stderr)
        return EXIT_USAGE
    opts = settings.sync_options()
    # the walks start first, each in its own process: reading only, they are safe before the lease, and the
    # imports, lease and database set-up below then overlap them (a third of a no-change run otherwise)
    board = Board()
    walks: tuple[Any, ...] = (None, None)  # a changes run walks nothing before it has read the change logs
    if opts.scope == "full":
        walks = start_walks(os.path.abspath(args.src), os.path.abspath(args.dest), opts, board)
    try:
        from .cli_run import run_from_cli  # imported late: --help stays instant

        def adopt(session: Any) -> None:
            watch.session = session

        return run_from_cli(args, settings, opts, sys.stdout, sys.stderr, walks, stop_if_signalled, board, adopt)
    except BaseException:
        for child in walks:  # stopped before the session could (it cancels them itself otherwise)
            if child is not None:
                child.cancel(within=1.0)
        raise


def console_main() -> None:
    """The `ha-sync` command: main(), then exit - at once when a thread is still blocked on a dead share.
    A walk's or a folder level's pool thread (concurrent.futures) left behind on a share that stopped
    answering would otherwise keep the interpreter from exiting, which joins such threads at shutdown: the
    run had ended, said so and given its lease back, and its process stayed for as long as the server was
    away."""
    code = main()
    if any(t.is_alive() and not t.daemon and t is not threading.main_thread() for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console_main()
