"""The real `ha-sync` command: flags, exit codes, dry-run output, summary."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading

import pytest

from hasync_pipeline_tests.conftest import pair_args, run_cli, snapshot, write

T0 = 1_700_000_000


def base_args(src, dest, tmp_path, *extra):
    return (
        *pair_args(src, dest, "media"),
        "--log-dir",
        str(tmp_path / "logs"),
        "--no-dry-run",
        *extra,
    )


def test_help_lists_every_seed_flag():
    out = run_cli("--help").stdout
    for flag in (
        "--src",
        "--dest",
        "--pair",
        "--direction",
        "--db-dsn",
        "--lock-ttl",
        "--log-dir",
        "--log-retain-days",
        "--mtime-threshold",
        "--delete-missing",
        "--workers",
        "--dry-run",
        "--verbose",
        "--max-delete",
        "--trash-retain-days",
        "--exclude",
    ):
        assert flag in out
    assert "Exit codes" in out


def test_success_exit_0_with_summary(pair, tmp_path):
    dell, hp = pair
    write(dell / "a", "a")
    proc = run_cli(*base_args(dell, hp, tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "Sync success: 1 created" in proc.stdout
    assert (hp / "a").read_text() == "a"


def test_dry_run_prints_the_plan_and_changes_nothing(pair, tmp_path):
    dell, hp = pair
    write(dell / "new-file", "n")
    proc = run_cli(*base_args(dell, hp, tmp_path, "--dry-run"))
    assert proc.returncode == 0, proc.stderr
    assert "would copy     new-file  (new)" in proc.stdout
    assert "1 would be created" in proc.stdout
    assert snapshot(hp) == {}


def test_partial_failure_exit_3(pair, tmp_path):
    dell, hp = pair
    os.mkfifo(dell / "a-fifo")
    write(dell / "fine", "ok")
    proc = run_cli(*base_args(dell, hp, tmp_path))
    assert proc.returncode == 3
    assert "Sync partial_failure: 1 created" in proc.stdout and "a-fifo: special file" in proc.stdout
    assert (hp / "fine").exists()


def test_conflict_exit_7_says_where_both_versions_are(pair, tmp_path):
    dell, hp = pair
    write(dell / "clash", "file", T0 + 100)
    write(hp / "clash" / "x", "dir", T0)
    os.utime(hp / "clash", (T0, T0))
    proc = run_cli(*base_args(dell, hp, tmp_path))
    assert proc.returncode == 7
    assert "CONFLICT clash: file on the source, directory on the destination; the newer one" in proc.stdout
    assert "1 conflicts (both versions kept)" in proc.stdout
    assert (hp / "clash").read_text() == "file"


def test_refusal_exit_4_names_the_problem(pair, tmp_path):
    dell, hp = pair
    proc = run_cli(*base_args(dell, tmp_path / "not-mounted", tmp_path))
    assert proc.returncode == 4
    assert "not-mounted does not exist (is the volume mounted?)" in proc.stderr


def test_bad_usage_exit_2(pair, tmp_path):
    dell, hp = pair
    for bad in (("--workers", "-1"), ("--max-delete", "150"), ("--mtime-threshold", "abc"), ("--pair", "no-dash")):
        proc = run_cli(*base_args(dell, hp, tmp_path), *bad)
        assert proc.returncode == 2, bad
        assert "error: argument" in proc.stderr
    assert run_cli("--src", "/tmp").returncode == 2


@pytest.mark.slow
def test_a_database_address_ha_sync_cannot_use_is_bad_usage_and_changes_nothing(pair, tmp_path):
    dell, hp = pair
    write(dell / "a", "a")
    for dsn, says in (
        ("postgresql://u:pw@db/audit", "unsupported database 'postgresql'"),
        ("mysql+mysqldb://u:pw@db/audit", "cannot use 'mysql+mysqldb'"),
        ("mysql://u:pw@db:notaport/audit", "not a valid SQLAlchemy URL"),
        ("u:pw@tcp(db:3306", "not a Go-style MySQL DSN"),
    ):
        proc = run_cli(*base_args(dell, hp, tmp_path, "--db-dsn", dsn))
        assert proc.returncode == 2, (dsn, proc.stderr)
        assert says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert snapshot(hp) == {}


def test_exclude_flag_is_repeatable(pair, tmp_path):
    dell, hp = pair
    write(dell / "a.part", "p")
    write(dell / "b.tmp", "t")
    write(dell / "c.txt", "c")
    assert run_cli(*base_args(dell, hp, tmp_path, "--exclude", "*.part", "--exclude", "*.tmp")).returncode == 0
    assert sorted(snapshot(hp)) == [b"c.txt"]


@pytest.mark.skipif(shutil.which("faketime") is None, reason="Debian's faketime is not installed")
@pytest.mark.slow
def test_a_clock_an_hour_off_is_reported_and_changes_no_decision(pair, tmp_path):
    """This machine's clock an hour ahead of the one that stamps the files (libfaketime, the real CLI)."""
    dell, hp = pair
    write(dell / "a", "a")
    proc = subprocess.run(
        ["faketime", "-f", "+1h", sys.executable, "-m", "hasync_pipeline.cli", *base_args(dell, hp, tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"clock skew: files written in {dell} get mtimes -3600 s off" in proc.stdout
    assert (hp / "a").read_text() == "a"
    plain = run_cli(*base_args(dell, hp, tmp_path))
    assert plain.returncode == 0 and "clock skew" not in plain.stdout


def test_an_unusable_log_folder_is_one_line_exit_4_and_nothing_changes(pair, tmp_path):
    """It once ended in a Python traceback."""
    dell, hp = pair
    write(dell / "a", "a")
    not_a_folder = tmp_path / "logs-file"
    not_a_folder.write_text("a file where the log folder should be")
    proc = run_cli(*pair_args(dell, hp), "--no-dry-run", "--log-dir", str(not_a_folder))
    assert proc.returncode == 4, proc.stderr
    assert f"opslog folder {not_a_folder} unusable: File exists" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert snapshot(hp) == {}


@pytest.mark.slow
def test_a_log_disk_filling_up_mid_run_stops_the_changes_in_one_line_and_the_next_run_finishes(pair, tmp_path):
    dell, hp = pair
    logs = tmp_path / "logs"
    logs.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(logs)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (logs / "ballast").write_bytes(b"x" * (900 << 10))  # leaves ~1.1 MiB: enough to start, not to finish
        for i in range(6000):  # ~300 bytes of opslog each
            write(dell / f"d{i // 1000}" / f"file-{i:05d}", "x", T0)
        proc = run_cli(*pair_args(dell, hp), "--no-dry-run", "--log-dir", str(logs))
        assert proc.returncode == 1, proc.stderr
        assert "cannot write the opslog" in proc.stderr and "No space left on device; changes stopped" in proc.stderr
        assert "Traceback" not in proc.stderr
        copied = sum(1 for _, _, files in os.walk(hp) for f in files if f.startswith("file-"))
        assert 0 < copied < 6000  # it stopped part-way
        (logs / "ballast").unlink()
        for leftover in logs.glob("opslog-*"):
            leftover.unlink()  # (what a user freeing space might do)
        proc = run_cli(*pair_args(dell, hp), "--no-dry-run", "--log-dir", str(logs))
        assert proc.returncode == 0, proc.stderr
        assert sum(1 for _, _, files in os.walk(hp) for f in files if f.startswith("file-")) == 6000
    finally:
        subprocess.run(["umount", "-l", str(logs)])


def _with_stop_signals_blocked() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})


def test_a_sigterm_at_the_very_start_ends_with_exit_6_not_143(pair, tmp_path):
    """The signal is sent before the interpreter has even started (held pending by a blocked mask the child
    inherits): whenever ha-sync first can, it must take it as a stop, not die of it."""
    dell, hp = pair
    write(dell / "a", "a")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hasync_pipeline.cli", *base_args(dell, hp, tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_with_stop_signals_blocked,
    )
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 6, err
    assert "interrupted by SIGTERM before any change" in err and "Traceback" not in err
    assert snapshot(hp) == {}


@pytest.mark.slow
def test_two_ctrl_c_while_waiting_for_the_database_end_cleanly_and_release_the_lease(pair, tmp_path):
    dell, hp = pair
    write(dell / "a", "a")
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = threading.Event()

    def accept_and_stay_silent() -> None:
        with contextlib.suppress(OSError):
            while True:
                listener.accept()
                accepted.set()

    threading.Thread(target=accept_and_stay_silent, daemon=True).start()
    dsn = f"u:pw@tcp(127.0.0.1:{listener.getsockname()[1]})/audit"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hasync_pipeline.cli",
            *base_args(dell, hp, tmp_path, "--db-dsn", dsn, "--db-timeout", "60"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert accepted.wait(60), "ha-sync never asked the database"  # it is now waiting for an answer
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)  # the impatient second Ctrl-C
        _, err = proc.communicate(timeout=60)
    finally:
        listener.close()
    assert proc.returncode == 6, err
    assert "interrupted by SIGINT" in err and "Traceback" not in err and "KeyboardInterrupt" not in err
    assert snapshot(hp) == {}  # it was before any change
    assert run_cli(*base_args(dell, hp, tmp_path)).returncode == 0  # the lease was given back
    assert (hp / "a").read_text() == "a"


def test_version_json_and_each_operation_said_once_in_its_tense(pair, tmp_path):
    dell, hp = pair
    write(dell / "a.txt", "a")
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("ha-sync 0.")
    dry = run_cli(*base_args(dell, hp, tmp_path, "--dry-run", "--verbose"))
    assert dry.stdout.count("a.txt") == 1 and "would copy" in dry.stdout and "done" not in dry.stdout
    real = run_cli(*base_args(dell, hp, tmp_path, "--verbose"))
    assert real.stdout.count("a.txt") == 1 and "done  copy" in real.stdout
    write(dell / "b.txt", "b")
    scripted = run_cli(*base_args(dell, hp, tmp_path, "--json"))
    summary = json.loads(scripted.stdout)  # stdout is the JSON alone
    assert summary["status"] == "success" and summary["exit_code"] == scripted.returncode == 0
    assert summary["created"] == 1 and summary["dry_run"] is False and summary["bytes"] == 1


@pytest.mark.slow
def test_restore_puts_a_trashed_version_back_as_the_newest_and_records_it(tmp_path):
    from sqlalchemy import select

    from hasync_pipeline.audit import AuditStore
    from hasync_pipeline.audit.schema import sync_iterations, sync_operations

    dell, hp = tmp_path / "dell" / "media", tmp_path / "hp" / "media"
    env = {
        "HA_SYNC_DELL_ROOT": str(tmp_path / "dell"),
        "HA_SYNC_HP_ROOT": str(tmp_path / "hp"),
        "HA_SYNC_LOG_DIR": str(tmp_path / "logs"),
    }
    hp.mkdir(parents=True)
    for text, when in (("first draft", T0), ("second draft", T0 + 100)):
        write(dell / "notes.txt", text, when)
        assert run_cli(*pair_args(dell, hp), "--no-dry-run", env=env).returncode == 0
    assert (hp / "notes.txt").read_text() == "second draft"  # the first draft is in hp's trash
    listed = run_cli("restore", "--pair", "media", "--side", "hp", "notes.txt", "--list", env=env)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 1 and " 11 B " in listed.stdout
    restored = run_cli("restore", "--pair", "media", "--side", "hp", "notes.txt", env=env)
    assert restored.returncode == 0, restored.stderr
    assert "the version it replaced is in the trash" in restored.stdout
    assert (hp / "notes.txt").read_text() == "first draft" and (hp / "notes.txt").stat().st_mtime > T0 + 100
    kept = sorted(p.read_text() for p in (hp / ".hasync-trash").rglob("notes.txt*"))
    assert kept == ["first draft", "second draft"]  # nothing lost: the trash keeps both
    store = AuditStore()
    with store.engine.connect() as conn:
        [it] = conn.execute(select(sync_iterations).where(sync_iterations.c.direction == "restore-hp")).all()
        [op] = conn.execute(select(sync_operations).where(sync_operations.c.iteration_id == it.id)).all()
    assert it.status == "success" and op.filepath == "notes.txt" and op.reason.startswith("restored: ")
    assert (op.size_before, op.size_after) == (12, 11)
    outside = run_cli("restore", "--pair", "media", "--side", "hp", "../../etc/passwd", env=env)
    assert outside.returncode == 2 and "is not a path inside the pair folder" in outside.stderr
    nothing = run_cli("restore", "--pair", "media", "--side", "dell", "notes.txt", env=env)
    assert nothing.returncode == 4 and "no version in the trash; nothing changed" in nothing.stderr


@pytest.mark.slow
def test_every_user_error_is_one_line_with_its_documented_exit_code_and_nothing_changes(tmp_path):
    """A walk through the mistakes a user makes, each with the exit code the README's table gives: one line on
    stderr naming the problem, no traceback, the destination untouched.  (A log disk filling mid-run, exit 1,
    and the unreadable cases, exit 3, have tests of their own above and in test_engine_failures.)"""
    dell, hp = tmp_path / "dell", tmp_path / "hp"
    write(dell / "a.txt", "a")
    hp.mkdir()
    write(tmp_path / "a-file", "not a folder")
    write(tmp_path / "pairs.toml", "this is = = not toml")
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64m", "tmpfs", str(readonly)], check=True)
    try:
        cases = [
            (
                "source missing",
                base_args(tmp_path / "gone", hp, tmp_path),
                {},
                4,
                "does not exist (is the volume mounted?)",
            ),
            ("source is a file", base_args(tmp_path / "a-file", hp, tmp_path), {}, 4, "is not a directory"),
            ("destination read-only", base_args(dell, readonly, tmp_path), {}, 4, "read-only filesystem"),
            ("source = destination", base_args(dell, dell, tmp_path), {}, 4, "are the same folder"),
            (
                "log dir is a file",
                (*base_args(dell, hp, tmp_path), "--log-dir", str(tmp_path / "a-file")),
                {},
                4,
                "unusable",
            ),
            ("bad DSN", base_args(dell, hp, tmp_path, "--db-dsn", "postgresql://u:secret@db/a"), {}, 2, "unsupported"),
            ("bad setting", base_args(dell, hp, tmp_path), {"HA_SYNC_WORKERS": "lots"}, 2, "HA_SYNC_WORKERS: 'lots'"),
            (
                "bad pairs file",
                base_args(dell, hp, tmp_path),
                {"HA_SYNC_PAIRS_FILE": str(tmp_path / "pairs.toml")},
                2,
                "cannot read pairs file",
            ),
        ]
        for what, args, env, code, says in cases:
            proc = run_cli(*args, env=env)
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            assert proc.returncode == code, (what, proc.returncode, proc.stderr)
            assert len(lines) == 1 and says in lines[0] and "Traceback" not in proc.stderr, (what, proc.stderr)
            assert "secret" not in proc.stderr + proc.stdout, what
            assert snapshot(hp) == {} and snapshot(readonly) == {}, what
    finally:
        subprocess.run(["umount", str(readonly)], check=False)


def test_the_command_exits_when_its_run_ended_though_a_pool_thread_is_still_blocked():
    """A walk's or a folder level's pool thread left behind on a dead share is non-daemon (concurrent.futures):
    the interpreter would wait for it at exit, as long as the server is away.  Stood in for by a thread that
    waits forever; the command's own work (here: a usage error, code 2) is done."""
    program = (
        "import threading, sys\n"
        "from hasync_pipeline import cli\n"
        "threading.Thread(target=threading.Event().wait, name='stuck-on-a-dead-share').start()\n"
        "sys.argv = ['ha-sync', 'job', 'no_such_job']\n"
        "cli.console_main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no_such_job" in proc.stderr, proc.stderr
