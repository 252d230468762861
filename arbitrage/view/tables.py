"""Rows of one parquet file by number, read a row group at a time: a page never loads the file."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from threading import Lock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CACHED_GROUPS = 6  # row groups (a few MB each) kept for the next page; memory stays bounded


def indices(values) -> pa.Array:
    """An int64 arrow array over a numpy buffer. pa.array() would import pandas on its first call
    (~1.8 s here), which is most of the time to the first page."""
    data = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


class RowGroups:
    def __init__(self, path: Path):
        self.path = path
        self.file = pq.ParquetFile(path)
        self.names = self.file.schema_arrow.names
        sizes = [self.file.metadata.row_group(i).num_rows for i in range(self.file.num_row_groups)]
        self.bounds = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.num_rows = int(self.bounds[-1])
        self._cache: OrderedDict[tuple, pa.Table] = OrderedDict()
        self._lock = Lock()  # ParquetFile is not safe to read from two server threads at once

    def group_of(self, row: int) -> int:
        return int(np.searchsorted(self.bounds, row, side="right") - 1)

    def group(self, i: int, columns: tuple[str, ...]) -> pa.Table:
        columns = tuple(c for c in columns if c in self.names)
        key = (i, columns)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            table = self.file.read_row_group(i, columns=list(columns))
            self._cache[key] = table
            while len(self._cache) > CACHED_GROUPS:
                self._cache.popitem(last=False)
            return table

    def take(self, rows, columns: tuple[str, ...]) -> list[dict]:
        """The given rows (file row numbers, any order) as dicts, in the order asked."""
        rows = np.asarray(rows, dtype=np.int64)
        out: list[dict | None] = [None] * len(rows)
        groups = np.searchsorted(self.bounds, rows, side="right") - 1
        for g in np.unique(groups):
            picked = np.flatnonzero(groups == g)
            table = self.group(int(g), columns).take(indices(rows[picked] - self.bounds[g]))
            for slot, row in zip(picked, table.to_pylist(), strict=True):
                out[slot] = row
        return out  # type: ignore[return-value]

    def span(self, start: int, stop: int, columns: tuple[str, ...]) -> pa.Table:
        """Rows [start, stop) as one table (reads the row groups that cover them)."""
        if stop <= start:
            return self.group(0, columns).slice(0, 0) if self.file.num_row_groups else pa.table({})
        first, last = self.group_of(start), self.group_of(stop - 1)
        parts = [self.group(g, columns) for g in range(first, last + 1)]
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        return table.slice(start - int(self.bounds[first]), stop - start)
