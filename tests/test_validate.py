"""Validate/split on real AG News rows with injected problems: invalid rows, duplicates, leakage, stratification."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import stratified_head, write_csv_gz
from textclf.config import IngestConfig, SplitConfig
from textclf.errors import ConfigError, DataValidationError
from textclf.ingest import ingest_dataset
from textclf.provenance import read_json
from textclf.validate import validate_and_split


def _build(tmp_path, train: pd.DataFrame, test: pd.DataFrame, **split_kwargs):
    write_csv_gz(train, tmp_path / "data" / "train.csv.gz")
    write_csv_gz(test, tmp_path / "data" / "test.csv.gz")
    ingest_dataset(IngestConfig(dataset_uri=str(tmp_path / "data")), tmp_path / "ingest")
    config = SplitConfig(**{"validation_fraction": 0.2, **split_kwargs})
    return validate_and_split(tmp_path / "ingest", config, tmp_path / "splits")


@pytest.fixture(scope="module")
def base_frames(ag_news_frames):
    return stratified_head(ag_news_frames["train"], 60, seed=1), stratified_head(ag_news_frames["test"], 25, seed=1)


def test_duplicates_leakage_and_invalid_rows_are_removed_and_reported(tmp_path, base_frames):
    train, test = base_frames
    test_row = test.iloc[0]
    leaked_exact = test.iloc[[1]]
    # Same story with AG News escapes and different case: only the normalised check catches it.
    leaked_normalised = test.iloc[[2]].assign(title=test.iloc[2]["title"].upper() + " #39;")
    duplicate = train.iloc[[5]]
    conflicting = pd.DataFrame([{"label": l, "title": "Same headline", "description": "Same body"} for l in "12"])
    empty = pd.DataFrame([{"label": "1", "title": "", "description": "  "}])
    train = pd.concat([train, leaked_exact, leaked_normalised, duplicate, conflicting, empty], ignore_index=True)
    result = _build(tmp_path, train, test, max_invalid_fraction=0.05)
    report = result.report

    assert report["invalid_rows"]["train"]["dropped"] == 1
    assert report["invalid_rows"]["train"]["by_reason"] == {"empty": 1}
    assert report["invalid_rows"]["train"]["rows"] == [len(train)]  # the last data row
    assert report["duplicates"]["train"]["exact_duplicates_removed"] == 1
    assert report["duplicates"]["train"]["conflicting_label_rows_removed"] == 2
    assert report["leakage"]["exact"] == 1
    assert report["leakage"]["normalised"] == 1
    assert report["leakage"]["removed_from_train"] == 2
    kept = pd.concat(pd.read_parquet(tmp_path / "splits" / f"{s}.parquet") for s in ("train", "validation"))
    assert len(kept) == 240  # the 240 clean rows survive; every injected problem row is gone
    assert not kept["text"].isin(pd.read_parquet(tmp_path / "splits" / "test.parquet")["text"]).any()
    assert test_row["title"] in pd.read_parquet(tmp_path / "splits" / "test.parquet")["text"].iloc[0]
    markdown = (tmp_path / "splits" / "validation_report.md").read_text()
    assert "Train/test leakage removed from train: 2" in markdown


def test_split_is_stratified_and_seeded(tmp_path, base_frames):
    train, test = base_frames
    first = _build(tmp_path / "a", train, test, seed=3).report
    second = _build(tmp_path / "b", train, test, seed=3).report
    other = _build(tmp_path / "c", train, test, seed=4).report
    assert first["class_counts"]["validation"] == {"World": 12, "Sports": 12, "Business": 12, "Sci/Tech": 12}
    assert first["fingerprints"] == second["fingerprints"]
    assert first["fingerprints"]["train_set_sha256"] != other["fingerprints"]["train_set_sha256"]
    assert first["fingerprints"]["test_set_sha256"] == other["fingerprints"]["test_set_sha256"]


def test_test_fingerprint_changes_with_test_content(tmp_path, base_frames):
    train, test = base_frames
    changed = test.copy()
    changed.iloc[0, changed.columns.get_loc("description")] += " (updated)"
    a = _build(tmp_path / "a", train, test).report["fingerprints"]
    b = _build(tmp_path / "b", train, changed).report["fingerprints"]
    assert a["test_set_sha256"] != b["test_set_sha256"]
    assert len(a["test_set_sha256"]) == 64


def test_too_many_empty_rows_fail_naming_the_row(tmp_path, base_frames):
    train, test = base_frames
    empties = pd.DataFrame([{"label": "2", "title": "", "description": ""}] * 30)
    with pytest.raises(DataValidationError, match=r"train\.csv\.gz: 30 of 270 rows have unusable text.*data row 241"):
        _build(tmp_path, pd.concat([train, empties], ignore_index=True), test)


def test_garbled_text_counts_as_invalid(tmp_path, base_frames):
    train, test = base_frames
    garbled = pd.DataFrame([{"label": "3", "title": "Stocks \ufffd\ufffd fall", "description": "x"}])
    result = _build(tmp_path, pd.concat([train, garbled], ignore_index=True), test, max_invalid_fraction=0.05)
    assert result.report["invalid_rows"]["train"]["by_reason"] == {"garbled (U+FFFD replacement character)": 1}


def test_caps_are_stratified(tmp_path, base_frames):
    train, test = base_frames
    report = _build(tmp_path, train, test, max_train_rows=80, max_test_rows=40).report
    assert report["rows_out"] == {"train": 64, "validation": 16, "test": 40}
    assert set(report["class_counts"]["test"].values()) == {10}


def test_class_too_small_to_stratify(tmp_path, base_frames):
    train, test = base_frames
    train = pd.concat([train[train["label"] != "4"], train[train["label"] == "4"].head(1)])
    with pytest.raises(DataValidationError, match=r"class 'Sci/Tech' has only 1 row"):
        _build(tmp_path, train, test)


def test_bad_split_config_is_rejected():
    with pytest.raises(ConfigError, match="validation_fraction must be in"):
        SplitConfig(validation_fraction=0.9)
    with pytest.raises(ConfigError, match="max_train_rows must be >= 0"):
        SplitConfig(max_train_rows=-1)


def test_report_records_source_file_hashes(small_splits):
    report = read_json(small_splits / "validation_report.json")
    assert report["fingerprints"]["test_file_sha256"] != report["fingerprints"]["train_file_sha256"]
    assert report["rows_out"] == {"train": 320, "validation": 80, "test": 200}


def test_newly_labelled_rows_join_training_with_the_same_checks(tmp_path, base_frames, ag_news_frames):
    train, test = base_frames
    fresh = stratified_head(ag_news_frames["train"].drop(train.index), 10, seed=3)  # 40 rows not in train
    new_rows = pd.concat([fresh, test.iloc[[0, 1]], train.iloc[[7]]], ignore_index=True)  # + 2 leaked, 1 duplicate
    write_csv_gz(train, tmp_path / "data" / "train.csv.gz")
    write_csv_gz(test, tmp_path / "data" / "test.csv.gz")
    write_csv_gz(new_rows, tmp_path / "new" / "train.csv.gz")
    config = IngestConfig(dataset_uri=str(tmp_path / "data"), new_rows_uri=str(tmp_path / "new"))
    ingest_dataset(config, tmp_path / "ingest")
    report = validate_and_split(tmp_path / "ingest", SplitConfig(validation_fraction=0.2), tmp_path / "splits").report
    assert report["rows_in"] == {"train": 240, "test": 100, "new_rows": 43}
    assert report["leakage"]["removed_from_train"] == 2
    assert report["duplicates"]["train"]["exact_duplicates_removed"] == 1
    assert sum(report["new_rows_used"].values()) == 40
    assert report["rows_out"]["train"] + report["rows_out"]["validation"] == 280
    assert "new_rows_file_sha256" in report["fingerprints"]
    assert "newly labelled 43" in (tmp_path / "splits" / "validation_report.md").read_text()


def test_newly_labelled_rows_with_an_unknown_label_name_the_file_and_row(tmp_path, base_frames):
    train, test = base_frames
    write_csv_gz(train, tmp_path / "data" / "train.csv.gz")
    write_csv_gz(test, tmp_path / "data" / "test.csv.gz")
    write_csv_gz(train.head(3).assign(label=["1", "9", "2"]), tmp_path / "new" / "train.csv.gz")
    config = IngestConfig(dataset_uri=str(tmp_path / "data"), new_rows_uri=str(tmp_path / "new"))
    with pytest.raises(DataValidationError, match=r"new/train\.csv\.gz: unknown label '9' at data row 2"):
        ingest_dataset(config, tmp_path / "ingest")
