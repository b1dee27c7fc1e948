"""uid allow-lists in DataComp's format, metadata filters, and `vitamin-nas data subset` as a real command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from data_helpers import uid

from nas.data import UidSet, filter_metadata
from nas.data.subset import UID_DTYPE, decode_uids, encode_uids
from nas.errors import ConfigError


@pytest.fixture
def metadata(tmp_path):
    """Two parquet files of DataComp-like metadata (uid, text, sizes, CLIP scores)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "uid": [uid(i) for i in range(200)],
        "text": [f"caption {i}" if i % 7 else "" for i in range(200)],
        "original_width": rng.integers(32, 512, 200),
        "clip_l14_similarity_score": rng.uniform(0.0, 0.45, 200),
        "clip_b32_similarity_score": rng.uniform(0.0, 0.45, 200),
    })
    directory = tmp_path / "metadata"
    directory.mkdir()
    frame.iloc[:120].to_parquet(directory / "00000000.parquet")
    frame.iloc[120:].to_parquet(directory / "00000001.parquet")
    return directory, frame


def test_hex_uids_round_trip_in_datacomps_npy_format(tmp_path):
    uids = [uid(i) for i in range(50)]
    UidSet.from_uids(uids).save(tmp_path / "subset.npy")
    raw = np.load(tmp_path / "subset.npy")
    assert raw.dtype == UID_DTYPE and len(raw) == 50
    assert np.array_equal(raw, np.sort(raw))  # sorted (high word, then low), as DataComp's tools expect
    assert sorted(decode_uids(raw)) == sorted(uids)
    loaded = UidSet.load(tmp_path / "subset.npy")
    assert all(u in loaded for u in uids)
    assert uid(99) not in loaded and "not-a-uid" not in loaded and uid(3).upper()[:31] not in loaded


def test_datacomp_pairs_are_read_as_datacomp_writes_them(tmp_path):
    uids = [uid(i) for i in range(10)]
    pairs = np.array([(int(u[:16], 16), int(u[16:], 16)) for u in uids], np.dtype("u8,u8"))
    np.save(tmp_path / "datacomp.npy", pairs)
    loaded = UidSet.load(tmp_path / "datacomp.npy")
    assert len(loaded) == 10 and all(u in loaded for u in uids)


def test_other_uids_and_parquet_lists(tmp_path):
    keys = ["000000001", "000000007", "shard3/000000042"]
    assert encode_uids(keys).dtype.kind == "U"
    UidSet.from_uids(keys).save(tmp_path / "keys.parquet")
    loaded = UidSet.load(tmp_path / "keys.parquet")
    assert all(k in loaded for k in keys) and "000000002" not in loaded and not loaded.is_hex
    with pytest.raises(ConfigError, match="not found"):
        UidSet.load(tmp_path / "missing.npy")
    with pytest.raises(ConfigError, match=".npy or .parquet"):
        UidSet.load(tmp_path / "keys.parquet").save(tmp_path / "keys.txt")


def test_filter_expressions_select_what_pandas_selects(metadata):
    directory, frame = metadata
    cases = {
        "clip_l14_similarity_score >= 0.3": frame.clip_l14_similarity_score >= 0.3,
        "clip_l14_similarity_score >= 0.2 and original_width > 100 or text == ''":
            ((frame.clip_l14_similarity_score >= 0.2) & (frame.original_width > 100)) | (frame.text == ""),
        "not (0.1 < clip_b32_similarity_score <= 0.3)":
            ~((frame.clip_b32_similarity_score > 0.1) & (frame.clip_b32_similarity_score <= 0.3)),
        "text in ['caption 1', 'caption 2', 'nothing']": frame.text.isin(["caption 1", "caption 2"]),
        "original_width != -1 and text not in ['']": frame.text != "",
    }
    for expression, expected in cases.items():
        selected = filter_metadata(directory, expression)
        assert sorted(decode_uids(selected.to_array())) == sorted(frame.uid[expected]), expression


def test_top_fraction_keeps_exactly_the_highest_scores(metadata):
    directory, frame = metadata
    selected = filter_metadata(directory, "original_width >= 100", top_fraction=0.3, by="clip_l14_similarity_score")
    rows = frame[frame.original_width >= 100]
    expected = rows.nlargest(int(np.ceil(0.3 * len(rows))), "clip_l14_similarity_score").uid
    assert sorted(decode_uids(selected.to_array())) == sorted(expected)


def test_bad_filters_name_what_is_wrong(metadata):
    directory, _ = metadata
    with pytest.raises(ConfigError, match="no column 'clip_score'.*clip_l14_similarity_score"):
        filter_metadata(directory, "clip_score > 0.3")
    with pytest.raises(ConfigError, match="unsupported"):
        filter_metadata(directory, "__import__('os').system('true')")
    with pytest.raises(ConfigError, match="cannot parse"):
        filter_metadata(directory, "clip_l14_similarity_score >=")
    with pytest.raises(ConfigError, match="top_fraction and by"):
        filter_metadata(directory, None, top_fraction=0.5)
    with pytest.raises(ConfigError, match="metadata not found"):
        filter_metadata(directory / "nope", "original_width > 1")


def test_subset_command_writes_datacomp_uids_and_rejects_unknown_columns(metadata, tmp_path, run_cli):
    directory, frame = metadata
    out = tmp_path / "subset.npy"
    result = run_cli("data", "subset", "--metadata", directory, "--where", "clip_l14_similarity_score >= 0.3",
                     "--out", out)
    assert result.returncode == 0, result.stderr
    expected = frame.uid[frame.clip_l14_similarity_score >= 0.3]
    assert f"wrote {len(expected)} uids" in result.stdout
    assert sorted(decode_uids(np.load(out))) == sorted(expected)

    bad = run_cli("data", "subset", "--metadata", directory, "--where", "clip_score >= 0.3", "--out",
                  tmp_path / "x.npy")
    assert bad.returncode == 2 and "no column 'clip_score'" in bad.stderr
