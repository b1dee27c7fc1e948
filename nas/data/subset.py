"""Subsets of a pool as uid allow-lists, and the metadata filters that make them.

DataComp names a subset by the uids it keeps: a `.npy` of 128-bit uids stored as pairs of uint64
(`np.dtype("u8,u8")`, the `--subset_file` of its resharder and baselines). `UidSet` reads that format,
plain string arrays and parquet files with a `uid` column, and answers membership without building a
Python set, so that a 100M-uid list costs 1.6 GB once and not tens of GB per loader worker.

`filter_metadata` turns a filter expression over the metadata parquet (DataComp ships one row per sample
with `uid` and CLIP scores) into such a list, as DataComp's baselines do:
`clip_l14_similarity_score >= 0.3`, `original_width >= 200 and text != ''`, and optionally the top
fraction of the survivors by a score column. Expressions are parsed, never evaluated: only comparisons,
`and`/`or`/`not`, `in [...]`, column names and literals are accepted.
"""

from __future__ import annotations

import ast
import math
import os
import string
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from nas.errors import ConfigError

UID_DTYPE = np.dtype("u8,u8")
"""DataComp's uid encoding: the 32 hex digits of a uid as two uint64 (high, low)."""


class UidSet:
    """A sorted, immutable set of uids: 128-bit hex uids as two uint64 columns, anything else as strings."""

    def __init__(self, uids: np.ndarray):
        if uids.dtype == UID_DTYPE or uids.dtype.names is not None:
            pairs = uids.astype(UID_DTYPE, copy=False)
            high, low = np.ascontiguousarray(pairs["f0"]), np.ascontiguousarray(pairs["f1"])
            if not _lexsorted(high, low):  # DataComp's lists come sorted: skip the sort (and its memory)
                order = np.lexsort((low, high))
                high, low = high[order], low[order]
            self._high, self._low = high, low
            self._strings = None
        else:
            self._strings = np.unique(uids.astype(str))
            self._high = self._low = None

    @classmethod
    def from_uids(cls, uids: Iterable[str]) -> UidSet:
        return cls(encode_uids(list(uids)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> UidSet:
        """Read a `.npy` (DataComp pairs or strings) or a `.parquet` with a `uid` column."""
        path = str(path)
        if not os.path.exists(path):
            raise ConfigError("uid list not found", source=path)
        if path.endswith(".npy"):
            try:
                uids = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as err:
                raise ConfigError(f"not a readable .npy uid list: {err}", source=path) from err
        elif path.endswith(".parquet"):
            uids = encode_uids(_read_uid_column(path))
        else:
            raise ConfigError("a uid list must be a .npy or .parquet file", source=path)
        if uids.ndim != 1:
            raise ConfigError(f"a uid list must be one-dimensional, got shape {uids.shape}", source=path)
        return cls(uids)

    @property
    def is_hex(self) -> bool:
        """Whether the uids are DataComp's 32-hex-digit kind (and samples must carry such uids)."""
        return self._strings is None

    def __len__(self) -> int:
        return len(self._high) if self._strings is None else len(self._strings)

    def __contains__(self, uid: object) -> bool:
        if not isinstance(uid, str):
            return False
        if self._strings is not None:
            i = int(np.searchsorted(self._strings, uid))
            return i < len(self._strings) and self._strings[i] == uid
        if len(uid) != 32:
            return False
        try:
            high, low = int(uid[:16], 16), int(uid[16:], 16)
        except ValueError:
            return False
        start = int(np.searchsorted(self._high, high, side="left"))
        stop = int(np.searchsorted(self._high, high, side="right"))
        return start < stop and low in self._low[start:stop]

    def to_array(self) -> np.ndarray:
        """The uids in DataComp's `.npy` form (pairs) or as strings, sorted."""
        if self._strings is not None:
            return self._strings.copy()
        pairs = np.empty(len(self._high), UID_DTYPE)
        pairs["f0"], pairs["f1"] = self._high, self._low
        return pairs

    def save(self, path: str | os.PathLike) -> None:
        """Write `.npy` (loadable by DataComp's tools when the uids are hex) or `.parquet` (a `uid` column)."""
        path = str(path)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if path.endswith(".npy"):
            np.save(path, self.to_array())
        elif path.endswith(".parquet"):
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({"uid": decode_uids(self.to_array())}), path)
        else:
            raise ConfigError("the output must end in .npy or .parquet", source=path)


def _lexsorted(high: np.ndarray, low: np.ndarray) -> bool:
    rising = high[1:] > high[:-1]
    return bool(np.all(rising | ((high[1:] == high[:-1]) & (low[1:] >= low[:-1]))))


def encode_uids(uids: Sequence[str]) -> np.ndarray:
    """DataComp pairs when every uid is 32 hex digits (vectorised via one `bytes.fromhex`), else strings."""
    uids = [str(u) for u in uids]
    if uids and all(len(u) == 32 for u in uids):
        try:
            raw = np.frombuffer(bytes.fromhex("".join(uids)), dtype=">u8").reshape(-1, 2)
        except ValueError:
            return np.asarray(uids, dtype=str)
        pairs = np.empty(len(uids), UID_DTYPE)
        pairs["f0"], pairs["f1"] = raw[:, 0], raw[:, 1]
        return pairs
    return np.asarray(uids, dtype=str)


def decode_uids(uids: np.ndarray) -> list[str]:
    """The inverse of `encode_uids`: hex strings from DataComp pairs, strings as they are."""
    if uids.dtype.names is None:
        return [str(u) for u in uids]
    raw = np.empty((len(uids), 2), dtype=">u8")
    raw[:, 0], raw[:, 1] = uids["f0"], uids["f1"]
    text = raw.tobytes().hex()
    return [text[i : i + 32] for i in range(0, len(text), 32)]


def _read_uid_column(path: str) -> list[str]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["uid"])
    except (OSError, KeyError, ValueError) as err:
        raise ConfigError(f"needs a 'uid' column: {err}", source=path) from err
    return table.column("uid").to_pylist()


def filter_metadata(metadata: str | os.PathLike, where: str | None = None, *, top_fraction: float | None = None,
                    by: str | None = None, uid_column: str = "uid", progress: bool = False) -> UidSet:
    """The uids of metadata rows that satisfy `where`, then optionally the top `top_fraction` by `by`.

    `metadata` is a parquet file or a directory of them (DataComp's `metadata/`). Ties at the top-fraction
    cut are broken by row order, so the count is exactly `ceil(top_fraction * rows)`.
    """
    dataset = open_metadata(metadata)
    columns = [uid_column] + ([by] if by else [])
    names = dataset.schema.names
    for name, field in ((uid_column, "uid_column"), (by, "by")):
        if name is not None and name not in names:
            raise ConfigError(f"no column {name!r}; the metadata has {', '.join(names)}", field=field)
    if (top_fraction is None) != (by is None):
        raise ConfigError("top_fraction and by go together", field="top_fraction")
    if top_fraction is not None and not 0 < top_fraction <= 1:
        raise ConfigError(f"must be in (0, 1], got {top_fraction}", field="top_fraction")
    expression = parse_filter(where, names) if where else None
    named = {n.id for n in ast.walk(ast.parse(where.strip(), mode="eval")) if isinstance(n, ast.Name)} if where else ()
    uids, scores = _scan(dataset, columns + sorted(set(named) & set(names) - set(columns)), expression,
                         by is not None, progress)
    if top_fraction is not None:
        keep = math.ceil(top_fraction * len(uids))
        order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")[:keep]
        uids = uids[np.sort(order)]
    return UidSet(uids)


def caption_fields(template: str) -> list[str]:
    """The metadata columns a caption template names ('{color} {shape}' -> ['color', 'shape'])."""
    try:
        return sorted({name for _, name, _, _ in string.Formatter().parse(template) if name})
    except ValueError:  # an unbalanced brace
        return []


def open_metadata(metadata: str | os.PathLike):
    """A pyarrow dataset of a parquet file or of the `.parquet` files of a directory (which may also hold the
    shards, as DataComp's download writes them side by side)."""
    import pyarrow.dataset as pads

    path = str(metadata)
    if not os.path.exists(path):
        raise ConfigError("metadata not found", source=path)
    files = path
    if os.path.isdir(path):  # pyarrow's own discovery would also try the tars; hidden and _ files are not data
        files = sorted(str(p) for p in Path(path).rglob("*.parquet")
                       if not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))
    if not files:
        raise ConfigError("holds no .parquet file", source=path)
    try:
        return pads.dataset(files, format="parquet")
    except (OSError, ValueError) as err:
        raise ConfigError(f"not parquet metadata: {err}", source=path) from err


def metadata_batches(dataset, columns: list[str], expression=None, batch_rows: int = 65_536) -> Iterator:
    """The dataset's rows (those matching `expression`) as tables of at most `batch_rows`, file by file.

    Read with `ParquetFile.iter_batches`, one file at a time: pyarrow's dataset scanner holds over 100 MB ahead
    on a 2-million-row metadata whatever its readahead settings; this holds a row group.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in dataset.files:
        with pq.ParquetFile(path) as file:
            missing = [c for c in columns if c not in file.schema_arrow.names]
            if missing:
                raise ConfigError(f"no column(s) {', '.join(missing)} in this file of the metadata", source=path)
            for batch in file.iter_batches(batch_size=batch_rows, columns=columns):
                table = pa.Table.from_batches([batch])
                yield table if expression is None else table.filter(expression)


def _scan(dataset, columns: list[str], expression, scored: bool, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Matching uids (`columns[0]`) and, when `scored`, their scores (`columns[1]`), read in batches of rows and
    encoded per batch: what is held is 16 bytes per matching uid (and 8 per score), not a string per row."""
    from tqdm import tqdm

    uids: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    batches = metadata_batches(dataset, columns, expression)
    for batch in tqdm(batches, desc="filtering metadata", unit="batch", disable=not progress):
        uids.append(encode_uids(batch.column(0).to_pylist()))
        if scored:
            scores.append(batch.column(1).to_numpy().astype(float))
    uids = [u for u in uids if len(u)]
    if not uids:
        return np.zeros(0, dtype=str), np.zeros(0)
    if len({u.dtype.names is None for u in uids}) > 1:  # some files' uids are hex, others not
        uids = [np.asarray(decode_uids(u), dtype=str) for u in uids]
    return np.concatenate(uids), np.concatenate(scores) if scores else np.zeros(0)


_COMPARISONS = {ast.Eq: "__eq__", ast.NotEq: "__ne__", ast.Lt: "__lt__", ast.LtE: "__le__", ast.Gt: "__gt__",
                ast.GtE: "__ge__"}


def parse_filter(expression: str, columns: Sequence[str]):
    """A pyarrow compute expression from a Python-like boolean expression over `columns`."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as err:
        raise ConfigError(f"cannot parse {expression!r}: {err.msg}", field="where") from err
    return _Filter(expression, list(columns)).build(tree.body)


class _Filter:
    """Walks the parsed expression, allowing only what a row filter needs."""

    def __init__(self, text: str, columns: list[str]):
        self.text = text
        self.columns = columns

    def build(self, node: ast.expr):
        import pyarrow.compute as pc

        if isinstance(node, ast.BoolOp):
            parts = [self.build(v) for v in node.values]
            combined = parts[0]
            for part in parts[1:]:
                combined = combined & part if isinstance(node.op, ast.And) else combined | part
            return combined
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return ~self.build(node.operand)
        if isinstance(node, ast.Compare):
            return self._compare(node)
        if isinstance(node, ast.Name):
            return self._column(node.id)
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            return pc.scalar(node.value)
        raise self._unsupported(node)

    def _compare(self, node: ast.Compare):
        combined = None
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, (ast.In, ast.NotIn)):
                term = self._operand(left).isin(self._literal_list(right))
                term = ~term if isinstance(op, ast.NotIn) else term
            elif type(op) in _COMPARISONS:
                term = getattr(self._operand(left), _COMPARISONS[type(op)])(self._operand(right))
            else:
                raise self._unsupported(node)
            combined = term if combined is None else combined & term
            left = right
        return combined

    def _operand(self, node: ast.expr):
        import pyarrow.compute as pc

        if isinstance(node, ast.Name):
            return self._column(node.id)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
            return pc.scalar(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            return pc.scalar(-node.operand.value)
        raise self._unsupported(node)

    def _literal_list(self, node: ast.expr) -> list:
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            try:
                return [ast.literal_eval(e) for e in node.elts]
            except ValueError as err:
                raise self._unsupported(node) from err
        raise self._unsupported(node)

    def _column(self, name: str):
        import pyarrow.compute as pc

        if name not in self.columns:
            raise ConfigError(f"no column {name!r} in {self.text!r}; the metadata has {', '.join(self.columns)}",
                              field="where")
        return pc.field(name)

    def _unsupported(self, node: ast.AST) -> ConfigError:
        return ConfigError(f"unsupported in a filter: {ast.unparse(node)!r} in {self.text!r}; use comparisons, "
                           "and/or/not, 'in [...]', column names and literals", field="where")
