"""The change feed's source: a watcher on each server appends what changed under its pair roots to each
root's change log (the contract, with its readers: engine/changelog.py).  Knows nothing of Dagster."""
