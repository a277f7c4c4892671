"""The registry of folder pairs (pairs.toml) and where each pair's two folders are."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources

from .settings import validate_pair_name

DIRECTIONS = ("dell_to_hp", "hp_to_dell")
SERVERS = {"dell": "192.168.2.100", "hp": "192.168.2.193"}


class RegistryError(ValueError):
    """The pairs file is missing, malformed or names a bad pair."""


@dataclass(frozen=True)
class Pair:
    name: str
    description: str = ""
    capacity: str = "500Gi"
    path: str = ""                       # folder name under each root (default: the pair name)
    settings: dict = field(default_factory=dict, hash=False, compare=False)

    def folder(self, side: str) -> str:
        """The pair's folder on 'dell' or 'hp', under $HA_SYNC_DELL_ROOT / $HA_SYNC_HP_ROOT."""
        root = os.environ.get(f"HA_SYNC_{side.upper()}_ROOT") or f"/mnt/{side}"
        return os.path.join(root, self.path or self.name)

    def endpoints(self, direction: str) -> tuple[str, str]:
        """(source, destination) folders for a direction."""
        src_side, dest_side = sides(direction)
        return self.folder(src_side), self.folder(dest_side)


def sides(direction: str) -> tuple[str, str]:
    if direction not in DIRECTIONS:
        raise RegistryError(f"unknown direction {direction!r}: use one of {DIRECTIONS}")
    src, _, dest = direction.partition("_to_")
    return src, dest


@dataclass(frozen=True)
class Registry:
    pairs: tuple[Pair, ...]
    defaults: dict
    source: str

    def get(self, name: str) -> Pair:
        for pair in self.pairs:
            if pair.name == name:
                return pair
        raise RegistryError(f"no pair named {name!r} in {self.source}")


def load_registry(path: str | None = None) -> Registry:
    path = path or os.environ.get("HA_SYNC_PAIRS_FILE")
    try:
        if path:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        else:
            path = "hasync_pipeline/pairs.toml (built in)"
            data = tomllib.loads(resources.files("hasync_pipeline").joinpath("pairs.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RegistryError(f"cannot read pairs file {path}: {exc}") from None
    pairs = []
    for name, body in (data.get("pairs") or {}).items():
        try:
            validate_pair_name(name)
        except ValueError as exc:
            raise RegistryError(f"{path}: {exc}") from None
        unknown = set(body) - {"description", "capacity", "path", "settings"}
        if unknown:
            raise RegistryError(f"{path}: pair {name!r} has unknown keys {sorted(unknown)}")
        pairs.append(Pair(name, body.get("description", ""), body.get("capacity", "500Gi"), body.get("path", ""),
                          dict(body.get("settings") or {})))
    if not pairs:
        raise RegistryError(f"{path}: no [pairs.<name>] tables")
    return Registry(tuple(pairs), dict(data.get("defaults") or {}), path)
