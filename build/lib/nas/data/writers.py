"""Writers of the layout `nas.data` reads: DataComp shards, their sizes.json, metadata parquet, and the names
and prompt templates of a zero-shot class-folder set. Shared by every dataset the toolkit writes
(`nas.data.synth`, `nas.data.digits`).

Every file is written under a temporary name and renamed, so that a killed writer leaves no half file
behind, and with fixed tar headers (mtime 0, mode 0444, no owner), so that the same samples give the same bytes.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

KEY = "__key__"
"""The member of a sample's mapping that names it (webdataset's convention); the other members are files."""


def write_shard(path: Path, samples: Iterable[Mapping[str, bytes | str]]) -> int:
    """One tar shard of samples, each `{"__key__": uid, "png": ..., "txt": ..., "json": ...}`; the sample count.

    Members are written in each mapping's order, as `<key>.<extension>`. Plain `tarfile` rather than
    webdataset's TarWriter, which is the same thing, because importing webdataset imports torch.
    """
    partial = path.with_suffix(".tar.partial")
    count = 0
    with tarfile.open(partial, "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            key = sample[KEY]
            for extension, data in sample.items():
                if extension == KEY:
                    continue
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size, info.mode = len(data), 0o444
                tar.addfile(info, io.BytesIO(data))
            count += 1
    partial.rename(path)
    return count


def write_sizes(directory: Path, sizes: Mapping[str, int]) -> None:
    """DataComp's `sizes.json` (samples per shard file name), which `nas.data.dataset_size` reads."""
    (directory / "sizes.json").write_text(json.dumps(dict(sizes), indent=1) + "\n")


def write_parquet(path: Path, columns: Mapping[str, Sequence]) -> None:
    """A metadata parquet of equal-length columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    partial = path.with_suffix(".parquet.partial")
    pq.write_table(pa.table(dict(columns)), partial)
    partial.rename(path)


def write_zeroshot_prompts(directory: Path, classnames: Sequence[str], templates: Sequence[str]) -> None:
    """`classnames.txt` (one per class folder, in sorted folder order) and `templates.txt` (each holds `{}`),
    as `nas.data.evalsets.zeroshot_set` reads them."""
    (directory / "classnames.txt").write_text("".join(f"{name}\n" for name in classnames))
    (directory / "templates.txt").write_text("".join(f"{template}\n" for template in templates))
