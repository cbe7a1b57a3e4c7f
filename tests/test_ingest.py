"""Ingest on the real AG News files and on bad inputs (each error must name the problem)."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest

from conftest import AG_NEWS, AG_NEWS_TEST_SHA256, ARXIV_CS, requires_ag_news, write_csv_gz
from textclf.config import IngestConfig
from textclf.errors import DataValidationError
from textclf.ingest import DatasetFormat, ingest_dataset
from textclf.provenance import read_json


@requires_ag_news
def test_ingest_real_ag_news(tmp_path):
    result = ingest_dataset(IngestConfig(dataset_uri=str(AG_NEWS)), tmp_path / "out")
    assert result.dataset_format is DatasetFormat.AG_NEWS
    assert result.labels == ["World", "Sports", "Business", "Sci/Tech"]
    assert result.rows == {"train": 30031, "test": 7600}
    test = pd.read_parquet(tmp_path / "out" / "test.parquet")
    assert test["label"].value_counts().to_dict() == {label: 1900 for label in result.labels}
    assert list(test.columns) == ["row", "text", "label", "title"]
    assert all(text.startswith(title) for text, title in zip(test["text"], test["title"], strict=True))
    report = read_json(tmp_path / "out" / "ingest_report.json")
    assert report["source_files"]["test"]["sha256"] == AG_NEWS_TEST_SHA256  # the hash in the dataset README


@requires_ag_news
def test_ingest_accepts_file_uri(small_ag_news, tmp_path):
    result = ingest_dataset(IngestConfig(dataset_uri=small_ag_news.as_uri()), tmp_path / "out")
    assert result.rows == {"train": 400, "test": 200}


@pytest.mark.skipif(not (ARXIV_CS / "test.csv.gz").is_file(), reason="arXiv CS set not found")
def test_ingest_detects_arxiv_format(tmp_path):
    frame = pd.read_csv(ARXIV_CS / "test.csv.gz", dtype=str, keep_default_na=False, nrows=600)
    write_csv_gz(frame.iloc[:400], tmp_path / "data" / "train.csv.gz")
    write_csv_gz(frame.iloc[400:][frame.iloc[400:]["label"].isin(set(frame.iloc[:400]["label"]))],
                 tmp_path / "data" / "test.csv.gz")
    result = ingest_dataset(IngestConfig(dataset_uri=str(tmp_path / "data")), tmp_path / "out")
    assert result.dataset_format is DatasetFormat.ARXIV_CS
    assert all(label.startswith("cs.") for label in result.labels)
    assert result.labels == sorted(result.labels)


def test_ingest_generic_parquet_with_custom_label_column(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame({"text": ["good film", "bad film", "great plot"], "sentiment": ["pos", "neg", "pos"]}).to_parquet(
        data / "train.parquet"
    )
    pd.DataFrame({"text": ["awful acting"], "sentiment": ["neg"]}).to_parquet(data / "test.parquet")
    result = ingest_dataset(IngestConfig(dataset_uri=str(data), label_column="sentiment"), tmp_path / "out")
    assert result.dataset_format is DatasetFormat.GENERIC
    assert result.labels == ["neg", "pos"]
    assert pd.read_parquet(tmp_path / "out" / "train.parquet")["text"].tolist() == ["good film", "bad film",
                                                                                     "great plot"]


def _dataset(tmp_path, train_text: str, test_text: str | None = None):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "train.csv").write_text(train_text, encoding="utf-8")
    good_test = 'label,title,description\n"1","Iraq talks","Leaders meet in Baghdad."\n'
    (data / "test.csv").write_text(test_text if test_text is not None else good_test, encoding="utf-8")
    return data


def _ingest(data, tmp_path, **kwargs):
    return ingest_dataset(IngestConfig(dataset_uri=str(data), **kwargs), tmp_path / "out")


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(DataValidationError, match=r"dataset directory not found: .*nope"):
        _ingest(tmp_path / "nope", tmp_path)


def test_missing_test_file_is_named(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("label,title,description\n1,a,b\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"missing test file in .*data: expected one of test\.csv\.gz"):
        _ingest(data, tmp_path)


@pytest.mark.parametrize(
    ("train_csv", "kwargs", "message"),
    [
        ("label,headline,description\n1,a,b\n", {}, r"train\.csv: wrong header: missing column\(s\) \['text'\]"),
        ("label,headline,description\n1,a,b\n", {"dataset_format": "ag_news"},
         r"missing column\(s\) \['title'\].*format ag_news"),
        ("label,title,description\n1,a,b\n2,c,d\n7,e,f\n", {},
         r"train\.csv: unknown label '7' at data row 3 .*expected one of"),
        ("label,title,description\n1,a,b\n,c,d\n", {}, r"empty label at data row 2"),
        ("label,title,description\n", {}, r"train\.csv: no data rows"),
        ("label,title,description\n1,a,b\n", {"dataset_format": "csv"}, r"dataset_format must be one of .*got 'csv'"),
    ],
    ids=["wrong-header", "wrong-header-explicit-format", "unknown-label", "empty-label", "header-only",
         "unknown-format"],
)
def test_bad_train_file_is_named(tmp_path, train_csv, kwargs, message):
    data = _dataset(tmp_path, train_csv)
    with pytest.raises(DataValidationError, match=message):
        _ingest(data, tmp_path, **kwargs)


def test_non_utf8_bytes_name_line(tmp_path):
    data = _dataset(tmp_path, "")
    (data / "train.csv").write_bytes(b'label,title,description\n1,ok,fine\n2,caf\xe9,bad bytes\n')
    with pytest.raises(DataValidationError, match=r"train\.csv: not valid UTF-8 at line 3"):
        _ingest(data, tmp_path)


def test_corrupt_gzip_is_named(tmp_path):
    data = _dataset(tmp_path, "")
    (data / "train.csv").unlink()
    (data / "train.csv.gz").write_bytes(b"this is not gzip")
    with pytest.raises(DataValidationError, match=r"train\.csv\.gz: not a valid gzip file"):
        _ingest(data, tmp_path)


def test_unsupported_scheme(tmp_path):
    with pytest.raises(DataValidationError, match=r"unsupported scheme 'ftp'"):
        _ingest("ftp://example/data", tmp_path)


def test_gzip_csv_round_trip(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "test"):
        with gzip.open(data / f"{split}.csv.gz", "wt", encoding="utf-8") as handle:
            handle.write('"label","title","description"\n"3","Stocks up","Markets rally \\$5."\n')
    result = _ingest(data, tmp_path)
    assert result.rows == {"train": 1, "test": 1}
    assert pd.read_parquet(tmp_path / "out" / "train.parquet")["label"].tolist() == ["Business"]


def test_read_split_texts_joins_text_columns_and_names_classes_like_the_stage(small_ag_news, tmp_path):
    from textclf.config import IngestConfig
    from textclf.ingest import ingest_dataset
    from textclf.ingest.ingest import read_split_texts

    frame = read_split_texts(small_ag_news, "test")
    ingest_dataset(IngestConfig(dataset_uri=str(small_ag_news)), tmp_path / "out")
    staged = pd.read_parquet(tmp_path / "out" / "test.parquet")
    assert frame["text"].tolist() == staged["text"].tolist() and frame["label"].tolist() == staged["label"].tolist()
    assert set(frame["label"]) == {"World", "Sports", "Business", "Sci/Tech"}


def test_text_columns_parameter_is_parsed_once_for_the_component_and_the_cli_check():
    from textclf.config import IngestConfig, parse_text_columns

    assert parse_text_columns(" title, description ,,") == ("title", "description")
    assert parse_text_columns(",".join(IngestConfig.text_columns)) == IngestConfig.text_columns


@pytest.mark.skipif(not (ARXIV_CS / "test.csv.gz").is_file(), reason="arXiv CS set not found")
def test_arxiv_abstracts_get_the_abstract_text_profile_through_ingest_and_split(tmp_path):
    from textclf.config import SplitConfig
    from textclf.provenance import read_json
    from textclf.validate import validate_and_split

    frame = pd.read_csv(ARXIV_CS / "test.csv.gz", dtype=str, keep_default_na=False, nrows=800)
    common = frame["label"].value_counts()
    frame = frame[frame["label"].isin(common[common >= 20].index)]
    write_csv_gz(frame.iloc[:600], tmp_path / "data" / "train.csv.gz")
    write_csv_gz(frame.iloc[600:], tmp_path / "data" / "test.csv.gz")
    ingest_dataset(IngestConfig(dataset_uri=str(tmp_path / "data")), tmp_path / "out")
    assert read_json(tmp_path / "out" / "ingest_report.json")["text_profile"] == "abstract"
    validate_and_split(tmp_path / "out", SplitConfig(validation_fraction=0.2), tmp_path / "splits")
    assert read_json(tmp_path / "splits" / "validation_report.json")["text_profile"] == "abstract"
