"""The registry of folder pairs (pairs.toml), where each pair's two folders are, and a pair's settings."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from .settings import SettingError, Settings, check_layer, deployment, resolve

DIRECTIONS = ("dell_to_hp", "hp_to_dell")
SERVERS = {"dell": "192.168.2.100", "hp": "192.168.2.193"}
_PAIR_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*\Z")


class RegistryError(ValueError):
    """The pairs file is missing, malformed or names a bad pair."""


def validate_pair_name(name: str) -> str:
    """Pair names become Lease names (ha-sync-<pair>) and file names: letters and digits, a letter first."""
    if not _PAIR_NAME.match(name or ""):
        raise ValueError(f"invalid pair name {name!r}: use letters and digits, starting with a letter")
    return name


@dataclass(frozen=True)
class Pair:
    name: str
    description: str = ""
    capacity: str = "500Gi"
    path: str = ""  # folder name under each root (default: the pair name)
    settings: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def folder(self, side: str, where: Settings | None = None) -> str:
        """The pair's folder on 'dell' or 'hp', under the dell_root / hp_root setting."""
        where = where or deployment()
        return os.path.join(where[f"{side}_root"], self.path or self.name)

    def endpoints(self, direction: str, where: Settings | None = None) -> tuple[str, str]:
        """(source, destination) folders for a direction."""
        src_side, dest_side = sides(direction)
        return self.folder(src_side, where), self.folder(dest_side, where)


def sides(direction: str) -> tuple[str, str]:
    if direction not in DIRECTIONS:
        raise RegistryError(f"unknown direction {direction!r}: use one of {DIRECTIONS}")
    src, _, dest = direction.partition("_to_")
    return src, dest


@dataclass(frozen=True)
class Registry:
    pairs: tuple[Pair, ...]
    defaults: dict[str, Any]
    source: str

    def get(self, name: str) -> Pair:
        for pair in self.pairs:
            if pair.name == name:
                return pair
        raise RegistryError(f"no pair named {name!r} in {self.source}")

    def find(self, name: str) -> Pair | None:
        return next((pair for pair in self.pairs if pair.name == name), None)

    def settings_for(
        self, pair_name: str, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """A pair's settings, every layer in the one order: table default < pairs.toml [defaults] <
        [pairs.<pair>.settings] < environment < `overrides` (CLI flags, run config).  A pair the registry
        does not know gets [defaults] only."""
        layers = [(f"{self.source} [defaults]", self.defaults)]
        pair = self.find(pair_name)
        if pair is not None:
            layers.append((f"{self.source} [pairs.{pair_name}.settings]", pair.settings))
        return resolve(*layers, overrides=overrides, environ=environ)


def load_registry(path: str | None = None) -> Registry:
    path = path or deployment().pairs_file
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
    try:
        defaults = check_layer(data.get("defaults") or {}, f"{path} [defaults]")
        for name, body in (data.get("pairs") or {}).items():
            validate_pair_name(name)
            unknown = set(body) - {"description", "capacity", "path", "settings"}
            if unknown:
                raise RegistryError(f"{path}: pair {name!r} has unknown keys {sorted(unknown)}")
            settings = check_layer(body.get("settings") or {}, f"{path} [pairs.{name}.settings]")
            pairs.append(
                Pair(name, body.get("description", ""), body.get("capacity", "500Gi"), body.get("path", ""), settings)
            )
    except RegistryError:
        raise
    except SettingError as exc:
        raise RegistryError(str(exc)) from None
    except ValueError as exc:  # a bad pair name
        raise RegistryError(f"{path}: {exc}") from None
    if not pairs:
        raise RegistryError(f"{path}: no [pairs.<name>] tables")
    return Registry(tuple(pairs), defaults, path)
