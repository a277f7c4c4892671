"""The demo: real folders, the real Dagster job, embedded defaults (SQLite, a local lease).

`python3 -m hasync_pipeline.demo [DIR]` (default ./demo) makes DIR/dell/media and DIR/hp/media with a few
files (notes.txt differs on the two sides), writes DIR/env.sh (the environment a shell needs to type
`dg launch --job media_dell_to_hp -m hasync_pipeline.definitions` itself, or `dg dev` for the UI; only the
media schedules run there), then runs `dg launch --job` for media_dell_to_hp,
media_hp_to_dell and media_dell_to_hp again with dry_run off.  It is the pair's first sync: the union of
both sides; notes.txt is a conflict, so both versions are kept (the HP's, newer, keeps the name; the
Dell's becomes notes.sync-conflict-<date>-<time>-dell.txt), and the third run carries that copy to the
HP, so both sides end equal.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

from .settings import BY_NAME

CODE = ("-m", "hasync_pipeline.definitions")
REPO_DAGSTER_YAML = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dagster.yaml")


def make_demo_folders(base: str, pair: str = "media") -> tuple[str, str]:
    dell, hp = os.path.join(base, "dell", pair), os.path.join(base, "hp", pair)
    files = {
        os.path.join(dell, "movies", "holiday.txt"): "a film only the Dell has\n",
        os.path.join(dell, "music", "song.txt"): "a song\n",
        os.path.join(hp, "photos-from-hp.txt"): "written on the HP\n",
        os.path.join(dell, "notes.txt"): "old notes\n",
        os.path.join(hp, "notes.txt"): "newer notes, edited on the HP\n",
    }
    for path, text in files.items():
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
            if path == os.path.join(dell, "notes.txt"):  # an hour older: the HP's keeps the name
                os.utime(path, (time.time() - 3600, time.time() - 3600))
    return dell, hp


def demo_environment(base: str) -> dict[str, str]:
    home = os.path.join(base, "dagster_home")
    os.makedirs(home, exist_ok=True)
    link = os.path.join(home, "dagster.yaml")
    if not os.path.lexists(link) and os.path.exists(REPO_DAGSTER_YAML):
        os.symlink(REPO_DAGSTER_YAML, link)
    settings = {
        "dell_root": os.path.join(base, "dell"),
        "hp_root": os.path.join(base, "hp"),
        "log_dir": os.path.join(base, "logs"),
        "state_dir": os.path.join(base, "state"),
        "lease_backend": "local",
        "scheduled_pairs": "media",  # the only pair the demo made folders for
    }
    # no DAGSTER_MODULE_NAME: `dg dev` and `dagster dev` then load the code twice and the webserver never
    # comes up; the commands name the code location instead (-m, or the repo's workspace.yaml / pyproject)
    return {"DAGSTER_HOME": home, **{BY_NAME[name].env: value for name, value in settings.items()}}


def write_env_file(base: str, env: dict[str, str]) -> str:
    path = os.path.join(base, "env.sh")
    with open(path, "w") as f:
        f.write("# source me: the demo's environment for `dg launch --job ... -m hasync_pipeline.definitions`\n")
        f.write("# and, from the repository, `dg dev` (the web UI and the daemon)\n")
        for key, value in env.items():
            f.write(f"export {key}={shlex.quote(value)}\n")
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    base = os.path.abspath(argv[0] if argv else "demo")
    make_demo_folders(base)
    env = demo_environment(base)
    env_file = write_env_file(base, env)
    config = os.path.join(base, "real-run.yaml")
    with open(config, "w") as f:
        f.write("ops:\n  acquire_lease:\n    config:\n      dry_run: false\n")
    dg = os.path.join(os.path.dirname(sys.executable), "dg")
    for job in ("media_dell_to_hp", "media_hp_to_dell", "media_dell_to_hp"):
        print(f"== dg launch --job {job} -c {config}", flush=True)
        proc = subprocess.run(
            [dg if os.path.exists(dg) else "dg", "launch", "--job", job, "-c", config, *CODE],
            env={**os.environ, **env},
        )
        if proc.returncode != 0:
            return proc.returncode
    print(
        f"\nDone: {base}/dell/media and {base}/hp/media now hold the same files; the audit trail is in "
        f"{base}/state/ha-sync-audit.sqlite3.\nFor your shell: . {env_file} && dg launch --job media_dell_to_hp "
        f"{' '.join(CODE)}   (a dry-run by default); for the UI, from the repository: "
        f". {env_file} && dg dev"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
