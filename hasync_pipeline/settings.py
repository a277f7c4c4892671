"""Every setting of HA Sync, declared once.

From this one table come the `ha-sync` flags, the Dagster run config of the sync jobs, the `HA_SYNC_<NAME>`
environment variables, the validation of `pairs.toml` and the README's settings table (a test holds the
README to it).  It is also the only module that reads `HA_SYNC_*` variables.

Precedence, later winning:  table default < pairs.toml [defaults] < [pairs.<pair>.settings] < environment
< CLI flag / run config.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .engine.latency import AUTO_THREADS, AUTO_WORKERS, LOCAL_WORKERS
from .engine.options import SyncOptions


class SettingError(ValueError):
    """A setting's value is unusable; the message names where it came from (never a secret's value)."""


def default_state_dir() -> str:
    """$XDG_STATE_HOME/ha-sync, else ~/.local/state/ha-sync: embedded SQLite and local lease files."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "ha-sync")


@dataclass(frozen=True)
class Setting:
    """One setting.  `cli`: an `ha-sync` flag; `run`: a field of a sync job's Dagster run config; `pair`: may
    be set in pairs.toml ([defaults] or per pair); `at_load`: read when the Dagster code location loads (it
    shapes the definitions), so not a field of the deployment resource.  Every setting is an environment
    variable."""

    name: str
    kind: type  # bool, int, float, str or list (of str)
    default: Any
    help: str
    unit: str = ""
    cli: bool = False
    run: bool = False
    pair: bool = False
    secret: bool = False
    at_load: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    default_from: Callable[[], Any] | None = None  # a default that depends on the machine

    @property
    def env(self) -> str:
        return f"HA_SYNC_{self.name.upper()}"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def initial(self) -> Any:
        if self.default_from is not None:
            return self.default_from()
        return list(self.default) if self.kind is list else self.default

    def from_text(self, raw: str, where: str) -> Any:
        """Parse a value given as text (environment variable, CLI flag)."""
        text = raw.strip()
        if self.kind is bool:
            low = text.lower()
            if low not in _TRUE | _FALSE:
                raise SettingError(f"{where}: {self._shown(raw)} is not true/false")
            return low in _TRUE
        if self.kind is list:
            return [p.strip() for p in text.split(",") if p.strip()]
        if self.kind in (int, float):
            try:
                value = self.kind(text)
            except ValueError:
                what = "a whole number" if self.kind is int else "a number"
                raise SettingError(f"{where}: {self._shown(raw)} is not {what}") from None
            return self.check(value, where)
        return self.check(raw, where)

    def check(self, value: Any, where: str) -> Any:
        """Type and range check of a value from any layer; returns it normalised."""
        kind = self.kind
        if value is None and self.default is None:
            return None
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is list:
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise SettingError(f"{where}: {self.name} must be a list of strings")
            return list(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise SettingError(f"{where}: {self.name} must be {_KIND_WORDS[kind]}, not {self._shown(value)}")
        if isinstance(value, (int, float)):
            if not math.isfinite(value):
                raise SettingError(f"{where}: {self.name} must be a finite number")
            if self.minimum is not None and value < self.minimum:
                raise SettingError(f"{where}: {self.name} must be at least {self.minimum:g}{self._unit()}")
            if self.maximum is not None and value > self.maximum:
                raise SettingError(f"{where}: {self.name} must be at most {self.maximum:g}{self._unit()}")
        if self.choices and value not in self.choices:
            named = ", ".join(c for c in self.choices if c)
            raise SettingError(f"{where}: {self._shown(value)} is not one of {named}")
        return value

    def _unit(self) -> str:
        return f" {self.unit}" if self.unit and self.unit != "%" else self.unit

    def _shown(self, value: Any) -> str:
        return "***" if self.secret else repr(value)


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
_KIND_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}

SETTINGS: tuple[Setting, ...] = (
    # ---- how a sync behaves: flags, run config, pairs.toml -------------------------------------------
    Setting(
        "dry_run",
        bool,
        True,
        "record and show what would change; change nothing. On until you turn it "
        "off, after a dry-run cycle looks right",
        cli=True,
        run=True,
        pair=True,
    ),
    Setting("delete_missing", bool, False, "propagate deletions (into the trash)", cli=True, run=True, pair=True),
    Setting(
        "workers",
        int,
        0,
        f"worker processes applying a batch; 0: chosen by the destination - {LOCAL_WORKERS} on a local disk "
        f"(the seed's default), {AUTO_WORKERS} on a network filesystem",
        cli=True,
        run=True,
        pair=True,
        minimum=0,
        maximum=64,
    ),
    Setting(
        "mtime_threshold",
        float,
        2.0,
        "two mtimes this close count as equal",
        "s",
        cli=True,
        run=True,
        pair=True,
        minimum=0,
    ),
    Setting(
        "max_delete",
        float,
        50.0,
        "refuse a run deleting more than this share of the destination's files",
        "%",
        cli=True,
        run=True,
        pair=True,
        minimum=0,
        maximum=100,
    ),
    Setting(
        "trash_retain_days",
        float,
        10.0,
        "keep replaced and deleted files this long in .hasync-trash (0: delete outright)",
        "days",
        cli=True,
        run=True,
        pair=True,
        minimum=0,
    ),
    Setting(
        "exclude",
        list,
        (),
        "globs of names to skip (with a '/': whole paths); repeat the flag, or comma-separate in the variable",
        cli=True,
        run=True,
        pair=True,
    ),
    Setting(
        "xattrs",
        bool,
        True,
        "copy extended attributes and POSIX ACLs, and propagate changes to them alone (rsync -XA)",
        cli=True,
        run=True,
        pair=True,
    ),
    Setting(
        "hard_links",
        bool,
        True,
        "files hard-linked together in the source are linked the same way in the destination (rsync -H)",
        cli=True,
        run=True,
        pair=True,
    ),
    Setting("sparse", bool, True, "holes in sparse files stay holes (rsync -S)", cli=True, run=True, pair=True),
    Setting(
        "walk_threads",
        int,
        0,
        f"threads listing each folder tree; 0: chosen per side - 1 on a local disk, {AUTO_THREADS} on a network "
        "filesystem (NFS, or a root whose stat takes a round trip)",
        cli=True,
        run=True,
        pair=True,
        minimum=0,
        maximum=256,
    ),
    Setting(
        "lock_ttl", int, 3600, "lease duration; renewed every ttl/3", "s", cli=True, run=True, pair=True, minimum=1
    ),
    Setting(
        "stall_timeout",
        float,
        60.0,
        "a side that answers nothing this long (a dead server: its share hangs) ends the run, failed, lease "
        "released; a root has min(5 s, this) to answer its probe before the lease is taken",
        "s",
        cli=True,
        run=True,
        pair=True,
        minimum=1,
    ),
    Setting(
        "scope",
        str,
        "full",
        "what a run looks at: full (both whole trees) or changes (only what the change logs of `ha-sync watch` "
        "name since this direction's last run; anything they cannot vouch for makes it a full run, saying why)",
        cli=True,
        run=True,
        choices=("full", "changes"),
    ),
    Setting(
        "allow_unmounted",
        list,
        (),
        "folders (relative to the root) that were mount points at the last sync and are plain folders now on "
        "purpose; without it such a folder is refused as an unmounted disk",
        cli=True,
        run=True,
    ),
    Setting(
        "log_retain_days",
        float,
        10.0,
        "delete opslogs older than this",
        "days",
        cli=True,
        run=True,
        pair=True,
        minimum=0,
    ),
    Setting("verbose", bool, False, "print every operation", cli=True, run=True),
    # ---- where things are: the deployment ------------------------------------------------------------
    Setting("log_dir", str, "/var/log/ha-sync", "folder of the opslogs (JSONL audit files)", cli=True),
    Setting(
        "db_dsn",
        str,
        None,
        "audit database: user:pass@tcp(host:3306)/db (the cluster secret's form) or "
        "a SQLAlchemy URL; default an embedded SQLite file in the state dir",
        cli=True,
        secret=True,
    ),
    Setting(
        "db_timeout",
        float,
        10.0,
        "one audit database call taking longer fails; the run goes on without the database, its opslog "
        "waits for the next run",
        "s",
        cli=True,
        minimum=1,
    ),
    Setting(
        "state_dir",
        str,
        None,
        "embedded SQLite database, local lease files, alert state",
        default_from=default_state_dir,
    ),
    Setting(
        "lease_backend",
        str,
        "",
        "kubernetes or local (default: kubernetes inside a pod)",
        choices=("", "kubernetes", "local"),
    ),
    Setting("lease_namespace", str, "", "namespace of the Lease (default: the pod's, else infrastructure)"),
    Setting("dell_root", str, "/mnt/dell", "where the Dell's pair folders are mounted"),
    Setting("hp_root", str, "/mnt/hp", "where the HP's pair folders are mounted"),
    Setting("pairs_file", str, "", "a pairs.toml to use instead of the built-in one", at_load=True),
    Setting(
        "audit_retain_days",
        int,
        30,
        "the weekly audit_maintenance job deletes sync_operations rows older than this",
        "days",
        minimum=1,
    ),
    Setting(
        "freshness_intervals",
        int,
        4,
        "alert when a pair has had no success for this many 15-minute intervals",
        minimum=1,
    ),
    Setting(
        "scheduled_pairs",
        list,
        (),
        "pairs whose schedules run from the start (comma-separated; default: every pair); the others' "
        "schedules are there, stopped",
        at_load=True,
    ),
    Setting(
        "partitions_start",
        str,
        "",
        "the first day (YYYY-MM-DD, UTC) of the sync jobs' 15-minute partitions, what a backfill can reach; "
        "default: 2026-12-01 (a fixed day: every process that loads the code agrees on the partitions)",
        at_load=True,
    ),
    Setting("alert_webhook", str, "", "URL that alerts are POSTed to as JSON", secret=True),
    Setting("smtp_host", str, "", "mail server for alerts"),
    Setting("smtp_port", int, 25, "its port", minimum=1, maximum=65535),
    Setting("smtp_from", str, "ha-sync@localhost", "sender of alert mails"),
    Setting("alert_email_to", list, (), "recipients of alert mails (comma-separated)"),
    Setting("dagster_url", str, "", "the Dagster UI, for the dashboard's run links"),
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
RUN_SETTINGS = tuple(s for s in SETTINGS if s.run)
PAIR_SETTINGS = frozenset(s.name for s in SETTINGS if s.pair)


class Settings(Mapping[str, Any]):
    """Resolved values, by name or attribute (`settings.dry_run`), each knowing the layer it came from."""

    def __init__(self, values: dict[str, Any], sources: dict[str, str]):
        self._values, self._sources = values, sources

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def source(self, name: str) -> str:
        return self._sources[name]

    def run_config(self) -> dict[str, Any]:
        """The values of the run settings: a sync job's default run config."""
        return {s.name: self._values[s.name] for s in RUN_SETTINGS}

    def sync_options(self, **internal: Any) -> SyncOptions:
        """The engine's knobs (internal ones, e.g. batch sizes in tests, by keyword)."""
        v = self._values
        return SyncOptions(
            dry_run=v["dry_run"],
            delete_missing=v["delete_missing"],
            workers=v["workers"],
            mtime_threshold=v["mtime_threshold"],
            max_delete_percent=v["max_delete"],
            trash_retain_days=v["trash_retain_days"],
            excludes=tuple(v["exclude"]),
            xattrs=v["xattrs"],
            hard_links=v["hard_links"],
            sparse=v["sparse"],
            walk_threads=v["walk_threads"],
            stall_timeout=v["stall_timeout"],
            allow_unmounted=tuple(v["allow_unmounted"]),
            scope=v["scope"],
            **internal,
        )


def check_layer(layer: Mapping[str, Any], where: str, allowed: frozenset[str] = PAIR_SETTINGS) -> dict[str, Any]:
    """Validate a pairs.toml table (or any mapping of settings): known names, allowed there, right types."""
    unknown = sorted(set(layer) - set(BY_NAME))
    if unknown:
        raise SettingError(f"{where}: unknown settings {unknown} (known: {sorted(allowed)})")
    misplaced = sorted(set(layer) - allowed)
    if misplaced:
        raise SettingError(f"{where}: {misplaced} cannot be set here (only {sorted(allowed)})")
    return {name: BY_NAME[name].check(value, where) for name, value in layer.items()}


def from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings given as HA_SYNC_<NAME> variables (empty ones count as not given)."""
    environ = os.environ if environ is None else environ
    out = {}
    for s in SETTINGS:
        raw = environ.get(s.env)
        if raw is not None and raw.strip() != "":
            out[s.name] = s.from_text(raw, s.env)
    return out


def resolve(
    *layers: tuple[str, Mapping[str, Any]],
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Table defaults, then each (name, values) layer in order (pairs.toml's), then the environment, then
    `overrides` (CLI flags or run config; None values count as not given)."""
    values = {s.name: s.initial() for s in SETTINGS}
    sources = dict.fromkeys(values, "default")
    stack = [
        *layers,
        ("environment", from_environment(environ)),
        ("override", {k: v for k, v in (overrides or {}).items() if v is not None}),
    ]
    for where, layer in stack:
        for name, value in layer.items():
            if name not in BY_NAME:
                raise SettingError(f"{where}: unknown setting {name!r}")
            values[name] = BY_NAME[name].check(value, where)
            sources[name] = where
    if values["state_dir"] is None:
        values["state_dir"] = default_state_dir()
    return Settings(values, sources)


def deployment(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings that are not about one pair: defaults and the environment."""
    return resolve(environ=environ)


def default_dsn(settings: Settings | None = None) -> str:
    """The audit database: db_dsn, else an embedded SQLite file in the state dir."""
    settings = settings or deployment()
    return settings.db_dsn or f"sqlite:///{os.path.join(settings.state_dir, 'ha-sync-audit.sqlite3')}"


# ---- the CLI's flags -----------------------------------------------------------------------------------


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per CLI setting; each defaults to None ("not given": the lower layers decide)."""
    for s in SETTINGS:
        if not s.cli:
            continue
        help_text = f"{s.help} (default: {_show_default(s)}; ${s.env})".replace("%", "%%")
        if s.kind is bool:
            parser.add_argument(s.flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif s.kind is list:
            parser.add_argument(s.flag, action="append", default=None, metavar="GLOB", help=help_text)
        else:
            parser.add_argument(
                s.flag,
                type=_flag_parser(s),
                default=None,
                metavar=_METAVAR.get(s.unit, "N") if s.kind is not str else s.name.split("_")[-1].upper(),
                help=help_text,
            )


_METAVAR = {"s": "SECONDS", "days": "DAYS", "%": "PERCENT"}


def _flag_parser(s: Setting) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        try:
            return s.from_text(raw, s.flag)
        except SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[1]) from None

    parse.__name__ = s.kind.__name__
    return parse


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    return {s.name: getattr(args, s.name) for s in SETTINGS if s.cli}


def _show_default(s: Setting) -> str:
    if s.default_from is not None:
        return "see below"
    value = s.default
    if s.kind is bool:
        return "on" if value else "off"
    if s.kind is list:
        return "none" if not value else ", ".join(value)
    if value in (None, ""):
        return "none"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value}{(' ' + s.unit) if s.unit and s.unit != '%' else s.unit}"


# ---- the README's table ---------------------------------------------------------------------------------


def markdown_table() -> str:
    """The README's settings table (README.md holds it between the settings-table markers)."""
    rows = ["| setting | `ha-sync` flag | variable | default | where | meaning |", "|---|---|---|---|---|---|"]
    for s in SETTINGS:
        where = ", ".join(w for w, on in (("CLI", s.cli), ("run config", s.run), ("pairs.toml", s.pair)) if on)
        default = "`~/.local/state/ha-sync`" if s.name == "state_dir" else f"`{_show_default(s)}`"
        flag = f"`--[no-]{s.flag[2:]}`" if s.kind is bool else f"`{s.flag}`"
        rows.append(
            f"| `{s.name}` | {flag if s.cli else ''} | `{s.env}` | {default} | {where or 'environment'} | {s.help} |"
        )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m hasync_pipeline.settings: print the README's table
    sys.stdout.write(markdown_table())
