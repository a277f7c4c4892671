"""The dashboard: its API over rows written by real `ha-sync` runs (SQLite and MariaDB), bad input, a dead
database, and the page itself in a real headless Chromium."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from hasync_pipeline.audit import AuditStore, FeedTip
from hasync_pipeline.dashboard.app import create_app
from hasync_pipeline.devtools.mariadb import PASSWORD, free_port
from hasync_pipeline_tests.conftest import pair_args, run_cli, write

T0 = 1_700_000_000


def populate(dell: Path, hp: Path, logs: Path, dsn: str) -> None:
    """Three runs of media: a dry-run, a real run, one with a FIFO in the source (a partial failure)."""
    write(dell / "a.txt", "a")
    write(dell / "dir" / "b.txt", "bb")
    common = (*pair_args(dell, hp, "media"), "--direction", "dell_to_hp", "--log-dir", str(logs), "--db-dsn", dsn)
    assert run_cli(*common, "--dry-run").returncode == 0
    assert run_cli(*common, "--no-dry-run").returncode == 0
    os.mkfifo(dell / "a-fifo")  # cannot be synced: a partial failure
    assert run_cli(*common, "--no-dry-run").returncode == 3


@pytest.fixture
def client_with_runs(pair, tmp_path, db_dsn):
    dell, hp = pair
    populate(dell, hp, tmp_path / "logs", db_dsn)
    return TestClient(create_app(db_dsn, dagster_url="http://dagster.example/dagster"))


def test_pairs_show_last_real_and_last_dry_run_separately(client_with_runs):
    data = client_with_runs.get("/api/pairs").json()["pairs"]
    assert [p["pair"] for p in data] == ["media", "photos", "owncloud", "games", "infra", "ai"]
    media = data[0]
    assert media["last_real"]["status"] == "partial_failure" and media["last_real"]["dry_run"] is False
    assert media["last_dry_run"]["dry_run"] is True and media["last_dry_run"]["files_created"] == 3
    assert data[1]["last_real"] is None and data[1]["last_dry_run"] is None


def test_iterations_and_paginated_operations(client_with_runs):
    its = client_with_runs.get("/api/iterations", params={"pair": "media", "limit": 2}).json()["iterations"]
    assert len(its) == 2 and its[0]["status"] == "partial_failure" and its[1]["status"] == "success"
    assert client_with_runs.get("/api/iterations", params={"pair": "nope"}).json() == {"iterations": []}
    real = its[1]["id"]
    first = client_with_runs.get("/api/operations", params={"iteration_id": real, "page_size": 2}).json()
    assert len(first["operations"]) == 2 and first["next_after"] is not None
    rest = client_with_runs.get(
        "/api/operations", params={"iteration_id": real, "page_size": 2, "after": first["next_after"]}
    ).json()
    paths = [o["filepath"] for o in first["operations"] + rest["operations"]]
    assert sorted(paths) == ["a.txt", "dir", "dir/b.txt"] and rest["next_after"] is None
    assert client_with_runs.get("/api/operations", params={"iteration_id": 999999}).json()["operations"] == []


@pytest.mark.parametrize(
    "url",
    [
        "/api/iterations?limit=abc",
        "/api/iterations?limit=0",
        "/api/iterations?limit=100000",
        "/api/operations",
        "/api/operations?iteration_id=x",
        "/api/operations?iteration_id=-1",
        "/api/operations?iteration_id=1&page_size=0",
        "/api/operations?iteration_id=1&after=-5",
        "/api/operations?iteration_id=99999999999999999999999",
    ],
)
def test_bad_input_is_a_400_with_a_json_message(url, tmp_path):
    client = TestClient(create_app(f"sqlite:///{tmp_path / 'a.sqlite3'}"))
    resp = client.get(url)
    assert resp.status_code == 400
    assert set(resp.json()) == {"error"} and "Traceback" not in resp.text


def test_dead_database_is_a_503_without_the_dsn(tmp_path):
    dsn = f"hasync:{PASSWORD}@tcp(127.0.0.1:{free_port()})/general_db"
    client = TestClient(create_app(dsn))
    for url in ("/api/pairs", "/api/iterations", "/api/operations?iteration_id=1", "/healthz"):
        resp = client.get(url)
        assert resp.status_code == 503
        assert resp.json() == {"error": "the audit database is unavailable"}
        assert PASSWORD not in resp.text and "127.0.0.1" not in resp.text
    assert client.get("/").status_code == 200  # the page itself loads, and says so (see the browser test)


# ---- the page in a real browser ------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def start_ui(dsn: str, port: int, env_extra: dict | None = None) -> subprocess.Popen:
    env = {
        **os.environ,
        "HA_SYNC_DB_DSN": dsn,
        "HA_SYNC_DAGSTER_URL": "http://dagster.example/dagster",
        **(env_extra or {}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "hasync_pipeline.dashboard.server", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "ha-sync-ui did not start"
            time.sleep(0.05)


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is not installed: run .ci/install-system-packages")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        yield b
        b.close()


@pytest.mark.slow
def test_page_in_chromium_cards_dry_badge_red_row_and_auto_refresh(pair, tmp_path, browser):
    dell, hp = pair
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    populate(dell, hp, tmp_path / "logs", dsn)
    store, now = AuditStore(dsn), datetime.now(UTC)  # the change feed: one side waiting, one watcher silent
    store.publish_tips("dell", {"media": FeedTip("e" * 16, 5, now - timedelta(seconds=42))}, now)
    store.publish_tips("hp", {"media": FeedTip("f" * 16, 3, None)}, now - timedelta(hours=2))
    store.dispose()
    port = free_port()
    ui = start_ui(dsn, port)
    try:
        page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("article.card[data-pair=media]")
        assert page.locator("article.card").count() == 6
        lag = page.locator("article.card[data-pair=media] .lag[data-server=dell]").inner_text()
        assert "dell → hp" in lag and "s behind" in lag
        silent = page.locator("article.card[data-pair=media] .lag.alert[data-server=hp]").inner_text()
        assert "watcher silent since" in silent and "lag unknown" in silent
        assert page.locator("#activity .badge.dry").count() >= 1
        red = page.locator("#activity tr.bad")
        assert red.count() == 1 and "partial failure" in red.inner_text()
        assert page.locator("#activity a[href^='http://dagster.example/dagster/runs/']").count() == 0  # CLI runs
        rows_before = page.locator("#activity tbody tr").count()
        write(dell / "later.txt", "new")  # a new iteration appears while the page is open
        assert run_cli(
            *pair_args(dell, hp, "photos"),
            "--log-dir",
            str(tmp_path / "logs"),
            "--db-dsn",
            dsn,
            "--no-dry-run",
        ).returncode in (0, 3)
        page.wait_for_function(
            f"document.querySelectorAll('#activity tbody tr').length > {rows_before}", timeout=25_000
        )  # the 10 s auto-refresh, without a reload
        assert "photos" in page.locator("#activity tbody tr").first.inner_text()
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        assert (tmp_path / "dashboard.png").stat().st_size > 10_000
        if os.environ.get("HA_SYNC_SCREENSHOT_DIR"):  # keep it for a person to look at
            shutil.copy(tmp_path / "dashboard.png", Path(os.environ["HA_SYNC_SCREENSHOT_DIR"]) / "dashboard.png")
    finally:
        ui.terminate()
        ui.wait(timeout=30)


@pytest.mark.slow
def test_page_says_when_the_database_is_down(browser, tmp_path):
    port = free_port()
    ui = start_ui(f"u:{PASSWORD}@tcp(127.0.0.1:{free_port()})/x", port)
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        banner = page.locator("#banner")
        banner.wait_for(state="visible", timeout=20_000)
        assert "audit database is unavailable" in banner.inner_text()
        assert PASSWORD not in page.content()
    finally:
        ui.terminate()
        ui.wait(timeout=30)


@pytest.mark.slow
def test_page_shows_a_run_s_conflicts(pair, tmp_path, browser):
    """A run that found a file changed on both sides: its card and its row say how many conflicts."""
    dell, hp = pair
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    write(dell / "doc.txt", "dell's", T0 + 100)
    write(hp / "doc.txt", "hp's, other", T0)
    args = (*pair_args(dell, hp), "--log-dir", str(tmp_path / "logs"), "--db-dsn", dsn, "--no-dry-run")
    assert run_cli(*args).returncode == 7  # the first sync: both versions kept
    port = free_port()
    ui = start_ui(dsn, port)
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("article.card[data-pair=media] .badge.conflict")
        assert page.locator("article.card[data-pair=media] .badge.conflict").inner_text() == "1 conflict"
        assert page.locator("#activity tbody tr .badge.conflict").count() == 1
    finally:
        ui.terminate()
        ui.wait(timeout=30)


def two_runs_with_a_conflict_and_a_replaced_file(tmp_path: Path, dsn: str) -> tuple[Path, Path, dict]:
    """media under real roots (so `ha-sync restore` finds it): a first sync that keeps two versions of doc.txt,
    then film.mkv replaced on the HP (its first version goes to the HP's trash)."""
    env = {
        "HA_SYNC_DELL_ROOT": str(tmp_path / "dell-root"),
        "HA_SYNC_HP_ROOT": str(tmp_path / "hp-root"),
        "HA_SYNC_DB_DSN": dsn,
        "HA_SYNC_LOG_DIR": str(tmp_path / "logs"),
    }
    dell, hp = tmp_path / "dell-root" / "media", tmp_path / "hp-root" / "media"
    write(dell / "doc.txt", "dell's", T0 + 100)
    write(hp / "doc.txt", "hp's, other", T0)
    write(dell / "movies" / "film.mkv", "version 1", T0)
    write(dell / "movies" / "poster.jpg", "the same bytes", T0)
    write(dell / "old" / "gone.txt", "soon deleted", T0)
    args = (*pair_args(dell, hp), "--direction", "dell_to_hp", "--no-dry-run")
    assert run_cli(*args, env=env).returncode == 7  # a conflict, both kept
    write(dell / "movies" / "film.mkv", "version 2, longer", T0 + 500)
    os.utime(dell / "movies" / "poster.jpg", (T0 + 900, T0 + 900))  # touched: only the mtime travels
    shutil.rmtree(dell / "old")  # a file and its folder deleted: the file is trashed, the folder just goes
    args = (*args, "--delete-missing")
    assert run_cli(*args, env=env).returncode == 0
    return dell, hp, env


@pytest.mark.slow
def test_a_dry_run_that_finds_nothing_new_shows_as_still_current(pair, tmp_path, db_dsn):
    """By the seed's rule it writes no iteration; the pair's card must not look stale for it."""
    dell, hp = pair
    write(dell / "a.txt", "a")
    args = (*pair_args(dell, hp), "--direction", "dell_to_hp", "--log-dir", str(tmp_path / "logs"), "--db-dsn", db_dsn)
    assert run_cli(*args, "--dry-run").returncode == 0
    client = TestClient(create_app(db_dsn))
    media = client.get("/api/pairs").json()["pairs"][0]
    assert media["last_dry_run"] is not None and media["dry_run_current"] is None  # recorded, not yet confirmed
    again = run_cli(*args, "--dry-run")
    assert again.returncode == 0 and "Dry-run already current" in again.stdout
    media = client.get("/api/pairs").json()["pairs"][0]
    current = media["dry_run_current"]
    assert current["iteration_id"] == media["last_dry_run"]["id"] and current["direction"] == "dell_to_hp"
    assert current["checked_at"] > media["last_dry_run"]["started_at"]


def test_iteration_operations_filter_by_operation_status_and_path_prefix(client_with_runs):
    real = client_with_runs.get("/api/iterations", params={"pair": "media", "limit": 2}).json()["iterations"][1]["id"]

    def paths(**params) -> list[str]:
        got = client_with_runs.get("/api/operations", params={"iteration_id": real, **params})
        assert got.status_code == 200, got.text
        return sorted(o["filepath"] for o in got.json()["operations"])

    assert paths() == ["a.txt", "dir", "dir/b.txt"]
    assert paths(prefix="dir/") == ["dir/b.txt"] and paths(prefix="%") == []  # a LIKE wildcard is a character
    assert paths(operation="create", status="success") == ["a.txt", "dir", "dir/b.txt"]
    assert paths(operation="delete") == [] and paths(status="fail") == []
    bad = client_with_runs.get("/api/operations", params={"iteration_id": real, "operation": "drop"})
    assert bad.status_code == 400 and "create, update, delete" in bad.json()["error"]
    page = client_with_runs.get(f"/iterations/{real}", params={"prefix": "dir/"})
    assert page.status_code == 200 and "dir/b.txt" in page.text and "a.txt" not in page.text
    assert 'value="dir/"' in page.text  # the form keeps the filter
    assert client_with_runs.get("/iterations/999999").status_code == 404
    assert client_with_runs.get("/iterations/abc").status_code == 400
    quoted = client_with_runs.get("/iterations/<b>bold")  # the error quotes the request: escaped
    assert quoted.status_code == 400 and "<b>" not in quoted.text and "&lt;b&gt;bold" in quoted.text


@pytest.mark.slow
def test_conflicts_and_trash_views_and_the_restore_command_they_show(tmp_path, db_dsn):
    dell, hp, env = two_runs_with_a_conflict_and_a_replaced_file(tmp_path, db_dsn)
    client = TestClient(create_app(db_dsn))
    found = client.get("/api/conflicts", params={"pair": "media"}).json()["conflicts"]
    renamed = [c for c in found if c["filepath"] == "doc.txt" and "is now doc.sync-conflict-" in c["reason"]]
    assert renamed and str(dell) in renamed[0]["reason"]  # which side kept the name, and where the other is
    trash = client.get("/api/trash", params={"pair": "media"}).json()["trash"]
    assert sorted(t["filepath"] for t in trash) == ["movies/film.mkv", "old/gone.txt"]  # not the touch, not "old"
    [film] = [t for t in trash if "film" in t["filepath"]]
    assert film["operation"] == "update" and film["size_before"] == len("version 1")
    assert film["restore"].startswith("ha-sync restore --pair media --side hp movies/film.mkv --at ")
    page = client.get("/pairs/media").text
    assert "movies/film.mkv" in page and "doc.sync-conflict-" in page and "<svg" in page
    assert client.get("/pairs/nope").status_code == 404
    assert client.get("/api/trash", params={"pair": "nope"}).status_code == 400
    # the command the page shows, run as shown: the replaced version is back, and recorded
    restored = run_cli(*shlex.split(film["restore"])[1:], env=env)
    assert restored.returncode == 0, restored.stderr
    assert (hp / "movies" / "film.mkv").read_text() == "version 1"
    its = client.get("/api/iterations", params={"pair": "media", "limit": 1}).json()["iterations"]
    assert its[0]["direction"] == "restore-hp" and its[0]["status"] == "success"


@pytest.mark.slow
def test_in_chromium_a_pair_s_name_opens_its_chart_conflicts_and_trash_and_a_row_its_files(tmp_path, browser):
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    dell, hp, env = two_runs_with_a_conflict_and_a_replaced_file(tmp_path, dsn)
    for _ in range(2):  # the second finds the same plan: it writes no row, the card says it is still current
        dry = run_cli(*pair_args(hp, dell), "--direction", "hp_to_dell", "--dry-run", env=env)
        assert dry.returncode in (0, 7), dry.stderr
    port = free_port()
    ui = start_ui(dsn, port)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/")
        assert "all times UTC" in page.locator("#legend").inner_text()
        first_time = page.locator("#activity tbody time").first
        first_time.wait_for()
        assert first_time.inner_text().endswith(" UTC") and "(your time)" in first_time.get_attribute("title")
        card = page.locator("article.card[data-pair=media]").inner_text()
        assert "dell → hp" in card and "plan still current: checked" in card  # which direction ran; a quiet dry run
        page.click("article.card[data-pair=media] h2 a")
        page.wait_for_selector("svg.chart")
        assert "2 real runs" in page.locator("svg.chart").get_attribute("aria-label")
        assert page.locator("svg.chart rect").count() == 2  # one bar per run
        conflicts = page.locator("section", has_text="Conflicts in the last").locator("tbody tr")
        assert conflicts.count() >= 1 and "sync-conflict" in conflicts.first.inner_text()
        trash = page.locator("section", has_text="In the trash").locator("tbody tr", has_text="movies/film.mkv")
        assert trash.count() == 1 and "ha-sync restore --pair media --side hp movies/film.mkv" in trash.inner_text()
        trash.locator("a").first.click()  # its iteration
        page.wait_for_selector("form.filters")
        assert page.locator("tbody tr").count() >= 1
        page.fill("input[name=prefix]", "movies/")
        page.click("form.filters button")
        page.wait_for_url("**prefix=movies%2F**")
        rows = page.locator("tbody tr")
        paths = sorted(rows.nth(i).locator("td.path").inner_text() for i in range(rows.count()))
        assert paths == ["movies/film.mkv", "movies/poster.jpg"]  # the replaced file and the touched one
    finally:
        ui.terminate()
        ui.wait(timeout=30)


@pytest.mark.slow
def test_in_chromium_a_refused_run_stands_out_with_its_reason(tmp_path, browser):
    """A refusal (here: the destination is not mounted) changed nothing, but a person must see it at once."""
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    write(tmp_path / "dell" / "a.txt", "a")
    args = (*pair_args(tmp_path / "dell", tmp_path / "not-mounted"), "--log-dir", str(tmp_path / "logs"))
    assert run_cli(*args, "--db-dsn", dsn, "--no-dry-run").returncode == 4
    port = free_port()
    ui = start_ui(dsn, port)
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        badge = page.locator("article.card[data-pair=media] .badge.refused")
        badge.wait_for()
        assert badge.inner_text() == "REFUSED"
        assert "does not exist (is the volume mounted?)" in page.locator("article.card[data-pair=media]").inner_text()
        assert page.locator("#activity tbody tr.bad .badge.refused").count() == 1
    finally:
        ui.terminate()
        ui.wait(timeout=30)
