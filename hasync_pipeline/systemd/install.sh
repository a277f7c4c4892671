#!/bin/sh
# Run HA Sync without Kubernetes: install the units and start both directions' timers of the given pairs.
#   sudo sh hasync_pipeline/systemd/install.sh media photos        (then edit /etc/ha-sync/env: roots, dry_run, database)
# Needs `ha-sync` at /usr/local/bin/ha-sync (e.g. pipx install --global, or a venv's link).
set -eu
[ "$#" -gt 0 ] || { echo "usage: $0 PAIR..." >&2; exit 2; }
here=$(dirname "$0")
unit_dir=${UNIT_DIR:-/etc/systemd/system}
etc_dir=${ETC_DIR:-/etc/ha-sync}
install -m 0644 "$here/ha-sync@.service" "$here/ha-sync-dell-to-hp@.timer" "$here/ha-sync-hp-to-dell@.timer" \
    "$here/ha-sync-watch.service" "$unit_dir/"  # the watcher: enabled by hand on each server (README)
mkdir -p "$etc_dir"
[ -e "$etc_dir/env" ] || install -m 0600 "$here/env.example" "$etc_dir/env"  # never overwrites your settings
[ -n "${NO_SYSTEMCTL:-}" ] && exit 0
systemctl daemon-reload
for pair in "$@"; do
    systemctl enable --now "ha-sync-dell-to-hp@$pair.timer" "ha-sync-hp-to-dell@$pair.timer"
done
