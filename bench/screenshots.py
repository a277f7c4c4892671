#!/usr/bin/env python3
"""The README's screenshots, made again from real runs: the dashboard (main page, a pair, an iteration) and a
folder asset in the Dagster UI.

    python3 bench/screenshots.py [--out bench/screenshots]

Builds a small media pair in a temporary folder, syncs it with `ha-sync` (a dry run, a first sync with a
conflict, a change, a run with a file that cannot be synced) and with `dagster job execute` (so the folder
assets have materializations), starts `ha-sync-ui` and `dagster-webserver` on free ports and photographs
them in headless Chromium (Debian's, via Playwright). Needs chromium (.ci/install-system-packages).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)
T0 = 1_700_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write(path: str, text: str, mtime: float) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.utime(path, (mtime, mtime))


def runs(base: str, env: dict[str, str]) -> None:
    dell, hp = f"{base}/dell/media", f"{base}/hp/media"
    for i in range(12):
        write(f"{dell}/movies/film-{i:02d}.mkv", "frames " * (i + 1) * 100, T0 + i)
    write(f"{dell}/notes.txt", "the Dell's notes", T0 + 100)
    write(f"{hp}/notes.txt", "the HP's notes, edited too", T0)
    os.makedirs(f"{base}/hp/photos", exist_ok=True)
    os.makedirs(f"{base}/dell/photos", exist_ok=True)
    cli = [f"{BIN}/ha-sync", "--src", dell, "--dest", hp, "--pair", "media", "--direction", "dell_to_hp"]
    subprocess.run([*cli, "--dry-run"], env=env, capture_output=True)  # exit 7: it would keep a conflict
    subprocess.run([*cli, "--no-dry-run"], env=env, capture_output=True)  # exit 7: a conflict, both kept
    write(f"{dell}/movies/film-03.mkv", "a better cut " * 500, T0 + 900)
    subprocess.run([*cli, "--no-dry-run"], env=env, check=True, capture_output=True)
    os.mkfifo(f"{dell}/a-pipe")  # cannot be synced: a partial failure
    subprocess.run([*cli, "--no-dry-run"], env=env, capture_output=True)
    os.unlink(f"{dell}/a-pipe")
    job = [f"{BIN}/dagster", "job", "execute", "-m", "hasync_pipeline.definitions", "-j"]
    for name in ("media_dell_to_hp", "media_hp_to_dell"):
        subprocess.run([*job, name], env={**env, "HA_SYNC_DRY_RUN": "false"}, check=True, capture_output=True)


@contextmanager
def serving(cmd: list[str], env: dict[str, str], port: int) -> Iterator[str]:
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{cmd[0]} did not start") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "screenshots"))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    os.makedirs(args.out, exist_ok=True)
    base = tempfile.mkdtemp(prefix="hasync-screenshots-")
    home = os.path.join(base, "dagster_home")
    os.makedirs(home)
    shutil.copy(os.path.join(REPO, "dagster.yaml"), home)
    env = {
        **os.environ,
        "DAGSTER_HOME": home,
        "HA_SYNC_DELL_ROOT": f"{base}/dell",
        "HA_SYNC_HP_ROOT": f"{base}/hp",
        "HA_SYNC_STATE_DIR": f"{base}/state",
        "HA_SYNC_LOG_DIR": f"{base}/logs",
        "HA_SYNC_LEASE_BACKEND": "local",
        "HA_SYNC_SCHEDULED_PAIRS": "media",
    }
    env.pop("DAGSTER_MODULE_NAME", None)
    try:
        runs(base, env)
        ui_port, web_port = free_port(), free_port()
        with (
            serving([f"{BIN}/ha-sync-ui", "--port", str(ui_port)], env, ui_port) as ui,
            serving(
                [f"{BIN}/dagster-webserver", "-m", "hasync_pipeline.definitions", "-p", str(web_port)], env, web_port
            ) as web,
            sync_playwright() as pw,
        ):
            chromium = shutil.which("chromium") or "/usr/bin/chromium"
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            shots = {
                "dashboard.png": (ui + "/", "article.card[data-pair=media]"),
                "dashboard-pair.png": (ui + "/pairs/media", "svg.chart"),
                "dagster-folder-asset.png": (web + "/assets/hp/media", "text=Latest materialization"),
            }
            for name, (url, ready) in shots.items():
                page.goto(url)
                page.wait_for_selector(ready, timeout=60_000)
                page.wait_for_timeout(1500)  # the UI's last requests settle (a picture, not a test)
                skip = page.locator("button", has_text="Skip")  # Dagster's first-visit newsletter dialog
                if skip.count():
                    skip.first.click()
                    page.wait_for_timeout(500)
                page.screenshot(path=os.path.join(args.out, name), full_page=name.startswith("dashboard"))
                print(os.path.join(args.out, name))
            page.goto(ui + "/")
            page.locator("#activity tbody tr a").nth(1).click()
            page.wait_for_selector("form.filters")
            page.screenshot(path=os.path.join(args.out, "dashboard-iteration.png"), full_page=True)
            print(os.path.join(args.out, "dashboard-iteration.png"))
            browser.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
