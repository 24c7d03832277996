import polars as pl
import pytest

from ml_core.storage import Lake, atomic_dir


def test_write_replaces_partition_and_is_idempotent(tmp_path):
    lake = Lake(tmp_path)
    df = pl.DataFrame({"a": [1, 2, 3]})
    lake.write_table("t", "2026-01-01", df)
    v1 = lake.version("t", "2026-01-01")
    lake.write_table("t", "2026-01-01", df)  # same content: same version, one partition
    assert lake.version("t", "2026-01-01") == v1
    assert lake.read_table("t", "2026-01-01").height == 3
    lake.write_table("t", "2026-01-01", pl.DataFrame({"a": [9]}))
    assert lake.read_table("t", "2026-01-01")["a"].to_list() == [9]
    assert lake.version("t", "2026-01-01") != v1
    assert [p.name for p in (tmp_path / "lake" / "t").iterdir()] == ["ds=2026-01-01"]


def test_crash_during_write_keeps_old_partition(tmp_path):
    lake = Lake(tmp_path)
    lake.write_table("t", "2026-01-01", pl.DataFrame({"a": [1]}))
    with pytest.raises(RuntimeError):
        with atomic_dir(lake.partition_dir("t", "2026-01-01")) as tmp:
            (tmp / "part-0.parquet").write_bytes(b"half a file")
            raise RuntimeError("killed mid-write")
    assert lake.read_table("t", "2026-01-01")["a"].to_list() == [1]
    assert not [p for p in (tmp_path / "lake" / "t").iterdir() if p.name.startswith(".")]


def test_missing_partitions_are_named(tmp_path):
    lake = Lake(tmp_path)
    lake.write_table("t", "2026-01-01", pl.DataFrame({"a": [1]}))
    with pytest.raises(FileNotFoundError, match="2026-01-02"):
        lake.scan_tables("t", ["2026-01-01", "2026-01-02"])
    with pytest.raises(FileNotFoundError, match="not materialized"):
        lake.version("t", "2026-01-03")


def test_duckdb_sql_over_the_lake(tmp_path):
    lake = Lake(tmp_path)
    for d, n in (("2026-01-01", 2), ("2026-01-02", 3)):
        lake.write_table("t", d, pl.DataFrame({"a": list(range(n))}))
    out = lake.sql("select ds, count(*) as n from lake('t') group by ds order by ds")
    assert out["n"].to_list() == [2, 3]


def test_a_linked_tree_shares_bytes_and_a_manifest_rewrite_leaves_the_source_sealed(tmp_path):
    """Bundles are assembled from sealed partitions by hard links; rewriting the bundle's
    manifest (a rename) must not touch the partition it came from."""
    import json

    from ml_core.integrity import _VERIFIED, verify_dir
    from ml_core.registry.bundles import read_manifest, write_manifest
    from ml_core.storage import link_tree

    lake = Lake(tmp_path)
    with lake.write_dir("trained_model", "2026-01-01") as tmp:
        (tmp / "model.pt").write_bytes(b"weights" * 1000)
        (tmp / "manifest.json").write_text(json.dumps({"partition": "2026-01-01"}))
    src = lake.partition_dir("trained_model", "2026-01-01")
    target = tmp_path / "bundle"
    link_tree(src, target)
    assert (target / "model.pt").stat().st_ino == (src / "model.pt").stat().st_ino  # a link, not a copy
    manifest = read_manifest(target)
    write_manifest(target, {**manifest, "version": "v1"})
    assert read_manifest(src) == {"partition": "2026-01-01"} and read_manifest(target)["version"] == "v1"
    _VERIFIED.clear()
    verify_dir(src, "trained_model partition 2026-01-01", "rebuild it")  # still what was sealed
