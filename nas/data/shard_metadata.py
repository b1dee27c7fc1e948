"""Metadata joined to the shards one shard at a time, so that a loader's memory does not grow with the pool.

DataComp's download (img2dataset) writes a parquet beside each tar, one row per sample of that shard
(`shards/00000123.tar`, `shards/00000123.parquet`); this toolkit's synthetic and digits datasets write the same
layout under `metadata/`. A directory of such files is *per shard*: when the stream opens a shard it reads that
shard's file only, and only the columns it needs, so a loader holds one shard's rows at a time (about 10,000 in
DataComp) whatever the size of the pool (12.8M rows for DataComp small, 128M for medium).

Metadata of any other layout (one table for the whole pool keyed by uid, such as DataComp's pool metadata or a
re-captioning) is split into that layout once, by `split_metadata` (`vitamin-nas data split`): one pass over
the shards' own uids (their `.json` members; images are seeked over, not read) and one pass over the metadata
in row batches, spilling the matched rows to disk sorted by shard, then one file per shard. Its memory is the
shards' uid index (20 bytes per sample), never the metadata's rows.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from webdataset.gopen import gopen
from webdataset.tariterators import base_plus_ext

from nas.data.shards import is_remote, local_path
from nas.data.subset import UidSet, caption_fields, encode_uids, metadata_batches, open_metadata
from nas.errors import ConfigError

RECORD = "_split.json"
"""What `split_metadata` wrote into a directory: its source, columns, shards and rows (a leading _ keeps pyarrow
and pandas from reading it as data)."""

SPLIT_HINT = ("to make them from metadata of another layout, run once: vitamin-nas data split --metadata METADATA "
              "--shards SHARDS --out DIR (then give DIR as the metadata)")
_SHARD_COLUMN = "__shard"


def shard_name(url: str) -> str:
    """The name of a shard's metadata file without `.parquet`: its tar's name without `.tar`
    (`shards/00000123.tar`, `s3://b/00000123.tar` and `pipe:aws s3 cp s3://b/00000123.tar -` give `00000123`)."""
    names = re.findall(r"([^/\s]+)\.tar\b", url)
    if not names:
        raise ConfigError(f"cannot tell the shard's name (a file name ending in .tar) in {url!r}", field="urls")
    return names[-1]


def per_shard_files(metadata: str | Path, urls: Sequence[str], field: str = "metadata") -> dict[str, Path]:
    """Each shard's metadata file, `METADATA/<shard>.parquet`; a `ConfigError` when any is missing."""
    directory = Path(metadata)
    files: dict[str, Path] = {}
    names: dict[str, str] = {}
    for url in urls:
        name = shard_name(url)
        if names.setdefault(name, url) != url:
            raise ConfigError(f"two shards are named {name}.tar ({names[name]} and {url}): per-shard metadata "
                              "cannot tell them apart", field="urls")
        files[url] = directory / f"{name}.parquet"
    if not directory.is_dir():
        raise ConfigError(f"metadata is read one shard at a time, from a directory of <shard>.parquet files "
                          f"(DataComp and img2dataset write one beside each tar); {SPLIT_HINT}", source=str(metadata),
                          field=field)
    missing = [path.name for path in files.values() if not path.is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise ConfigError(f"holds no per-shard file for {len(missing)} of {len(files)} shards ({shown}); metadata is "
                          f"read one shard at a time, from <shard>.parquet; {SPLIT_HINT}", source=str(metadata),
                          field=field)
    return files


class ShardCaptions:
    """Captions from per-shard metadata: `template` (str.format over column names, e.g. "{color} {shape}") filled
    from each row of a shard's file, read when the stream opens the shard. Picklable: each loader worker
    reads its own shards."""

    def __init__(self, metadata: str | Path, template: str, urls: Sequence[str]):
        self.names = caption_fields(template)
        if not self.names:
            raise ConfigError(f"a template over metadata columns, e.g. '{{color}} {{shape}}'; got {template!r}",
                              field="captions")
        self.template = template
        self.files = per_shard_files(metadata, urls)
        first = next(iter(self.files.values()))
        self._check_columns(first, source=str(metadata))

    def _check_columns(self, path: Path, source: str) -> None:
        import pyarrow.parquet as pq

        try:
            have = pq.read_schema(path).names
        except (OSError, ValueError) as err:
            raise ConfigError(f"not a readable parquet file: {err}", source=str(path)) from None
        missing = sorted({"uid", *self.names} - set(have))
        if missing:
            raise ConfigError(f"the metadata has no column(s) {', '.join(missing)}; it has {', '.join(have)}",
                              source=source, field="captions")

    def for_shard(self, url: str) -> dict[str, str]:
        """uid -> caption for the samples of one shard (only its rows are read)."""
        import pyarrow.parquet as pq

        path = self.files[url]
        self._check_columns(path, source=str(path))
        table = pq.read_table(path, columns=["uid", *self.names]).to_pydict()
        rows = zip(*(table[name] for name in self.names), strict=True)
        return {uid: self.template.format(**dict(zip(self.names, row, strict=True)))
                for uid, row in zip(table["uid"], rows, strict=True)}


class ShardSubset:
    """A uid allow-list per shard: the `uid` column of each shard's file in a per-shard directory (what
    `split_metadata` writes, with `subset=` to keep only a subset's rows), read when the stream opens the shard,
    so that a loader holds one shard's uids instead of the whole list."""

    def __init__(self, directory: str | Path, urls: Sequence[str]):
        import pyarrow.parquet as pq

        self.files = per_shard_files(directory, urls, field="subset")
        first = next(iter(self.files.values()))
        if "uid" not in pq.read_schema(first).names:
            raise ConfigError("per-shard uid lists need a 'uid' column", source=str(first), field="subset")

    def for_shard(self, url: str) -> UidSet:
        import pyarrow.parquet as pq

        return UidSet(encode_uids(pq.read_table(self.files[url], columns=["uid"]).column(0).to_pylist()))


# ---- splitting metadata of another layout ---------------------------------------------------------------------


def shard_uids(url: str) -> list[str]:
    """The uids of a shard's samples, in order, as the stream names them (the `.json`'s uid, else the key).

    A local tar is read by seeking from header to header, so only the small `.json` members are read; a
    remote one is streamed. A shard that breaks part-way gives the uids before the break.
    """
    uids: dict[str, str] = {}
    from_json: set[str] = set()
    try:
        if is_remote(url):
            tar = tarfile.open(fileobj=gopen(url, "rb"), mode="r|*")
        else:
            tar = tarfile.open(local_path(url), mode="r:*")
        with tar:
            for member in tar:
                prefix, suffix = base_plus_ext(member.name) if member.isreg() else (None, None)
                if prefix is None or prefix.rsplit("/", 1)[-1].startswith("__"):
                    continue
                uids.setdefault(prefix, prefix.rsplit("/", 1)[-1])
                if suffix.lower() == "json" and prefix not in from_json:
                    uid = _json_uid(tar.extractfile(member).read())
                    if uid is not None:
                        uids[prefix] = uid
                        from_json.add(prefix)
    except (OSError, EOFError, tarfile.TarError, ValueError):
        pass
    return list(uids.values())


def _json_uid(raw: bytes) -> str | None:
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    uid = meta.get("uid") if isinstance(meta, dict) else None
    return uid if isinstance(uid, str) else None


class ShardIndex:
    """Which shard holds each uid: the shards' uids sorted as fixed-width keys (16 bytes for DataComp's
    32-hex-digit uids) with their shard numbers, looked up a batch at a time with `np.searchsorted`."""

    def __init__(self, keys: np.ndarray, shards: np.ndarray, hexadecimal: bool):
        order = np.argsort(keys, kind="stable")
        self.keys, self.shards, self.hexadecimal = keys[order], shards[order], hexadecimal

    @classmethod
    def build(cls, urls: Sequence[str], progress: bool = False) -> ShardIndex:
        from tqdm import tqdm

        keys, shards = [], []
        for number, url in enumerate(tqdm(urls, desc="reading the shards' uids", unit="shard", disable=not progress)):
            uids = shard_uids(url)
            hexadecimal = _all_hex_keys(uids)
            keys.append(hexadecimal if hexadecimal is not None else np.asarray(uids, dtype=str))
            shards.append(np.full(len(uids), number, dtype=np.int32))
        hexadecimal = all(k.dtype.kind == "S" for k in keys)
        if not hexadecimal:  # some shard's uids are not DataComp's: compare every uid as text
            keys = [np.asarray([k.hex() for k in part], dtype=str) if part.dtype.kind == "S" else part
                    for part in keys]
        if not keys:
            return cls(np.zeros(0, "S16"), np.zeros(0, np.int32), True)
        return cls(np.concatenate(keys), np.concatenate(shards), hexadecimal)

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, uids: Sequence[str]) -> np.ndarray:
        """The shard number of each uid, -1 where no shard holds it."""
        found = np.full(len(uids), -1, dtype=np.int64)
        if not len(self.keys) or not len(uids):
            return found
        if self.hexadecimal:
            keys = _all_hex_keys(uids)
            if keys is not None:
                valid = np.ones(len(uids), dtype=bool)
            else:  # some uids are not DataComp's: they match nothing here
                valid = np.fromiter(map(_is_hex, uids), dtype=bool, count=len(uids))
                keys = _keys([u for u, ok in zip(uids, valid, strict=True) if ok], hexadecimal=True)
        else:
            valid, keys = np.ones(len(uids), dtype=bool), np.asarray(uids, dtype=str)
        position = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        hit = self.keys[position] == keys
        found[np.flatnonzero(valid)[hit]] = self.shards[position[hit]]
        return found


def _is_hex(uid: str) -> bool:
    return isinstance(uid, str) and len(uid) == 32 and all(c in "0123456789abcdefABCDEF" for c in uid)


def _all_hex_keys(uids: Sequence[str]) -> np.ndarray | None:
    """The keys of a batch whose uids are all 32 hex digits (one `bytes.fromhex` for the batch), else None."""
    if not all(isinstance(u, str) and len(u) == 32 for u in uids):
        return None
    try:
        return _keys(list(uids), hexadecimal=True)
    except ValueError:
        return None


def _keys(uids: list[str], hexadecimal: bool) -> np.ndarray:
    return np.frombuffer(bytes.fromhex("".join(uids)), dtype="S16") if hexadecimal else np.asarray(uids, dtype=str)


def split_metadata(metadata: str | Path, urls: Sequence[str], out: str | Path, columns: Sequence[str] | None = None,
                   *, subset: UidSet | None = None, uid_column: str = "uid", batch_rows: int = 65_536,
                   spill_rows: int = 250_000, progress: bool = False) -> dict[str, Any]:
    """Write `OUT/<shard>.parquet` for every shard: the metadata rows of its samples (only those in `subset`
    when given), with `uid` and `columns` (default: every column). Returns what `OUT/_split.json` records
    (pyarrow and pandas skip it when they read the directory).

    The metadata is read in batches of `batch_rows`; matched rows are spilled to `OUT/.split/` sorted by shard
    every `spill_rows`, then gathered per shard. A shard with no row gets an empty file, so that the layout is
    complete and the stream counts its samples as `no_metadata_row`.
    """
    import pyarrow as pa

    dataset = open_metadata(metadata)
    names = dataset.schema.names
    columns = [c for c in names if c != uid_column] if columns is None else list(columns)
    for name in [uid_column, *columns]:
        if name not in names:
            raise ConfigError(f"no column {name!r}; the metadata has {', '.join(names)}", source=str(metadata),
                              field="uid_column" if name == uid_column else "columns")
    out = Path(out)
    spill = out / ".split"
    shutil.rmtree(spill, ignore_errors=True)
    spill.mkdir(parents=True)
    index = ShardIndex.build(urls, progress)
    schema = pa.schema([pa.field("uid", pa.string()), *(dataset.schema.field(c) for c in columns)])
    parts, buffered, rows = [], [], 0
    for batch in _batches(dataset, [uid_column, *columns], batch_rows, progress):
        uids = batch.column(0).to_pylist()
        shard = index.lookup(uids)
        keep = np.flatnonzero(shard >= 0)
        if subset is not None:
            keep = keep[[uids[i] in subset for i in keep]] if len(keep) else keep
        if len(keep):
            table = batch.take(keep).rename_columns(schema.names).cast(schema)
            buffered.append(table.append_column(_SHARD_COLUMN, pa.array(shard[keep], pa.int32())))
            rows += len(keep)
        if sum(len(t) for t in buffered) >= spill_rows:
            parts.append(_spill(buffered, spill / f"{len(parts):05d}.parquet"))
            buffered = []
    if buffered:
        parts.append(_spill(buffered, spill / f"{len(parts):05d}.parquet"))
    for number, rows_of_shard in enumerate(_gathered(parts, len(urls), schema)):
        _write(rows_of_shard, out / f"{shard_name(urls[number])}.parquet")
    shutil.rmtree(spill)
    record = {"metadata": str(metadata), "columns": ["uid", *columns], "shards": len(urls), "rows": rows,
              "shard_samples": len(index), "subset": subset is not None}
    (out / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _batches(dataset, columns: list[str], batch_rows: int, progress: bool) -> Iterator:
    from tqdm import tqdm

    total = dataset.count_rows() if progress else None
    with tqdm(total=total, desc="joining metadata to shards", unit="row", disable=not progress) as bar:
        for batch in metadata_batches(dataset, columns, batch_rows=batch_rows):
            yield batch
            bar.update(batch.num_rows)


def _spill(tables: list, path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.concat_tables(tables).sort_by(_SHARD_COLUMN), path, row_group_size=8192)
    return path


def _gathered(parts: list[Path], shards: int, schema) -> Iterator:
    """Each shard's rows in turn, read from the row groups of the spilled parts whose shard range covers it."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    readers = [pq.ParquetFile(path) for path in parts]
    column = len(schema.names)  # the spilled parts' last column
    ranges = []
    for reader in readers:
        meta = reader.metadata
        ranges.append([(g, meta.row_group(g).column(column).statistics.min, meta.row_group(g).column(column)
                        .statistics.max) for g in range(meta.num_row_groups)])
    for number in range(shards):
        pieces = []
        for reader, groups in zip(readers, ranges, strict=True):
            wanted = [g for g, low, high in groups if low <= number <= high]
            if wanted:
                table = reader.read_row_groups(wanted)
                pieces.append(table.filter(pc.equal(table.column(_SHARD_COLUMN), number)).drop_columns(_SHARD_COLUMN))
        yield pa.concat_tables(pieces) if pieces else schema.empty_table()
    for reader in readers:
        reader.close()


def _write(table, path: Path) -> None:
    import pyarrow.parquet as pq

    partial = path.with_name(path.name + ".partial")
    pq.write_table(table, partial)
    partial.replace(path)
