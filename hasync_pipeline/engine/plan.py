"""The plan: the operations a run applies to the destination (and, for conflicts, the source), in order.
What goes into it is decided in reconcile.py."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from . import fsutil
from .paths import display, split
from .walk import Entry

# operations, in the order a batch applies them
RENAME_SRC, RENAME_DEST, MOVE = "rename-src", "rename-dest", "move"  # conflicts' losers; moves on the destination
MKDIR, COPY, TOUCH, SYMLINK, META, DELETE, RMDIR = "mkdir", "copy", "touch", "symlink", "meta", "delete", "rmdir"
HARDLINK = "hardlink"  # a second name of a file copied (or kept) elsewhere: linked to it, not copied
ORDER = (RENAME_SRC, RENAME_DEST, MOVE, MKDIR, COPY, TOUCH, SYMLINK, HARDLINK, META, DELETE, RMDIR)
_AUDIT_OPERATION = {
    MKDIR: "create",
    COPY: "update",
    TOUCH: "update",
    SYMLINK: "update",
    HARDLINK: "update",
    META: "update",
    DELETE: "delete",
    RMDIR: "delete",
    MOVE: "create",
    RENAME_SRC: "update",
    RENAME_DEST: "update",
}
# why an operation is not a plain propagation (the audit trail's `reason` column)
CONFLICT, RESTORED, MOVED, METADATA = "conflict", "restored", "moved", "metadata"


@dataclass(slots=True)
class Op:
    action: str
    path: bytes
    src: Entry | None
    dest: Entry | None
    detail: str = ""
    md5_src: str | None = None
    md5_dest: str | None = None
    new_path: bytes | None = None  # RENAME_*: the conflict copy's name; MOVE: where it goes; HARDLINK: its twin
    reason: str | None = None

    @property
    def operation(self) -> str:
        """The audit trail's create/update/delete."""
        if self.action in (COPY, SYMLINK, HARDLINK) and self.dest is None:
            return "create"
        return _AUDIT_OPERATION[self.action]

    @property
    def copy_bytes(self) -> int:
        return self.src.size if self.action == COPY and self.src is not None else 0

    @property
    def src_entry(self) -> Entry:
        """The source entry of an operation that has one (copies, links, folders made)."""
        assert self.src is not None, f"{self.action} without a source entry"
        return self.src

    @property
    def dest_entry(self) -> Entry:
        """The destination entry of an operation that has one (replacements, deletes)."""
        assert self.dest is not None, f"{self.action} without a destination entry"
        return self.dest

    def describe(self) -> str:
        target = f" -> {display(self.new_path)}" if self.new_path is not None else ""
        return f"{self.action:<8} {display(self.path)}{target}" + (f"  ({self.detail})" if self.detail else "")


@dataclass
class Plan:
    ops: list[Op] = field(default_factory=list)  # in apply order (ORDER)
    errors: list[tuple[bytes, str]] = field(default_factory=list)  # subtrees that could not be compared
    notes: list[str] = field(default_factory=list)  # what the user must hear: conflicts, restores, first sync
    unchanged: int = 0
    left_for_reverse: int = 0  # changed on the destination only: the opposite job carries them
    kept_deleted: int = 0  # deleted on the source, kept on the destination (delete propagation off)
    conflicts: int = 0
    first_sync: str = ""  # why there is no journal to compare with ("" when there is one)

    @property
    def skipped(self) -> int:
        return self.unchanged + self.left_for_reverse + self.kept_deleted

    def count(self, *actions: str) -> int:
        return sum(1 for op in self.ops if op.action in actions)

    @property
    def copy_bytes(self) -> int:
        return sum(op.copy_bytes for op in self.ops)


def md5_of(root: str, rel: bytes) -> str:
    """MD5 of a regular file below `root`, opened without following any symlink."""
    root_fd = fsutil.open_root(root)
    try:
        head, name = split(rel)
        dfd = fsutil.open_dir(root_fd, head)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        finally:
            os.close(dfd)
    finally:
        os.close(root_fd)
    with os.fdopen(fd, "rb", buffering=0) as f:
        h = hashlib.md5()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
        return h.hexdigest()
