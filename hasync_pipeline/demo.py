"""Make demo folders for a pair and sync them both ways with real files, on embedded defaults.

`python -m hasync_pipeline.demo [DIR]` (default ./demo): DIR/dell/<pair> and DIR/hp/<pair> get a few files
each, one edited on one side, then `ha-sync` runs dell->hp and hp->dell for real, so both sides end equal.
"""

from __future__ import annotations

import os
import sys
import time

from . import cli


def make_demo_folders(base: str, pair: str = "media") -> tuple[str, str]:
    dell, hp = os.path.join(base, "dell", pair), os.path.join(base, "hp", pair)
    for root in (dell, hp):
        os.makedirs(root, exist_ok=True)
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
    old = time.time() - 3600  # the Dell's notes are an hour older: newest (HP) wins both ways
    os.utime(os.path.join(dell, "notes.txt"), (old, old))
    return dell, hp


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    base = os.path.abspath(argv[0] if argv else "demo")
    dell, hp = make_demo_folders(base)
    common = ["--pair", "media", "--log-dir", os.path.join(base, "logs"), "--verbose"]
    for direction, src, dest in (("dell-to-hp", dell, hp), ("hp-to-dell", hp, dell)):
        print(f"== ha-sync {direction}: {src} -> {dest}")
        code = cli.main(["--src", src, "--dest", dest, "--direction", direction, *common])
        if code != cli.EXIT_OK:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
