"""Work on folders a level at a time, the folders of one level on threads together.

Why: on NFS each folder operation is several round trips (open, mkdir, chmod, utime...), and a run that makes
or settles a few hundred folders one by one waits for each in turn; the GIL is released in the syscalls, so
threads overlap the round trips.  Why by level: a folder is made after its parent, and settled (its final,
maybe read-only, mode) after its children.  Few folders (or one thread): in order, with no threads at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

PARALLEL_AT_LEAST = 16  # fewer folders than this: one by one (starting threads would cost more than it saves)


def by_level(
    items: Sequence[T], depth: Callable[[T], int], do: Callable[[T], R], threads: int, deepest_first: bool = False
) -> list[R]:
    """do(item) for every item, shallowest level first (or deepest), each level's items on `threads`
    threads at once; returns the results in the items' order.  An exception from `do` ends the work
    (the levels not started are not done) and is raised."""
    order = sorted(range(len(items)), key=lambda i: depth(items[i]), reverse=deepest_first)  # stable
    results: list[R | None] = [None] * len(items)
    if len(items) < PARALLEL_AT_LEAST or threads < 2:
        for i in order:
            results[i] = do(items[i])
        return results  # type: ignore[return-value]
    from concurrent.futures import ThreadPoolExecutor  # only here: a run with few folders never loads it

    levels: list[list[int]] = []
    for i in order:
        if not levels or depth(items[levels[-1][0]]) != depth(items[i]):
            levels.append([])
        levels[-1].append(i)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="folders") as pool:
        for level in levels:
            for i, result in zip(level, pool.map(lambda i: do(items[i]), level), strict=True):
                results[i] = result
    return results  # type: ignore[return-value]
