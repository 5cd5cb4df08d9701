"""Commit in chunks, reuse on resume: the one way a long stage keeps its work across a crash.

A :class:`Commits` holds the rows of an output file committed so far to its partial file
(``<file>.partial``, see :mod:`harness.artifacts`), keyed by one column. A stage computes what is
not there yet, :meth:`~Commits.commit` appends each finished chunk durably and passes the
stage's crash point, and :meth:`~Commits.finish` writes the output file and deletes the partial
one. A rerun of the stage reuses every committed row (``keep`` drops those it cannot: another
model, another request), so a crash loses one chunk at most. :func:`in_chunks` is the loop for
work cut into fixed chunks, which do not depend on what is already done: a resumed run sends the
same batches, and gets the same results, as an uninterrupted one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from harness.artifacts import append_jsonl, partial_path, read_partial_jsonl, write_jsonl
from harness.faults import crash_point

Row = dict[str, Any]
Item = TypeVar("Item")


class Commits:
    """The committed rows of ``path`` by their ``key`` column; ``point`` is the crash point each
    commit passes, ``what`` names a row in the message that reports reused work (which lists
    their keys if ``list_keys``)."""

    def __init__(self, path: Path, key: str, point: str, what: str = "row",
                 keep: Callable[[Row], bool] | None = None, list_keys: bool = False) -> None:
        self.path, self.key, self.point = path, key, point
        self.partial = partial_path(path)
        self.rows: dict[Any, Row] = {r[key]: r for r in read_partial_jsonl(self.partial)
                                     if keep is None or keep(r)}
        self.resumed = len(self.rows)
        if self.rows:
            keys = f": {', '.join(sorted(map(str, self.rows)))}" if list_keys else ""
            print(f"{self.partial}: {self.resumed} {what}(s) committed before are reused{keys}",
                  file=sys.stderr)

    def __contains__(self, key: Any) -> bool:
        return key in self.rows

    def commit(self, rows: Iterable[Row]) -> None:
        rows = list(rows)
        append_jsonl(self.partial, rows)
        self.rows.update({r[self.key]: r for r in rows})
        crash_point(self.point)

    def finish(self, write: Callable[[Path], None] | None = None) -> None:
        """Write the output file (``write(path)``; default: the committed rows, in the order they
        were committed) and delete the partial file."""
        if write is None:
            write_jsonl(self.path, self.rows.values())
        else:
            write(self.path)
        self.partial.unlink(missing_ok=True)


def in_chunks(commits: Commits, items: Sequence[Item], size: int, key: Callable[[Item], Any],
              compute: Callable[[Sequence[Item]], Iterable[Row]]) -> None:
    """Compute and commit ``items`` in fixed chunks of ``size``, skipping a chunk whose items
    (by ``key``) are all committed."""
    for start in range(0, len(items), size):
        todo = items[start:start + size]
        if all(key(x) in commits for x in todo):
            continue
        commits.commit(compute(todo))
