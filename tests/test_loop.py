"""``make loop``'s own pieces (the pipeline, monitor, trigger and gate it strings together are tested in their own
modules; the whole demo is run by ``make loop``)."""

from __future__ import annotations

import pytest
from conftest import AG_NEWS, ARXIV_CS, requires_ag_news

from textclf.errors import ConfigError
from textclf.loop import LoopConfig, Timeline, traffic, write_new_rows

requires_arxiv = pytest.mark.skipif(not (ARXIV_CS / "test.csv.gz").is_file(), reason="arXiv CS data not found")


@requires_ag_news
@requires_arxiv
def test_shifted_traffic_mixes_arxiv_abstracts_and_shifts_the_class_prior():
    config = LoopConfig(dataset_uri=str(AG_NEWS), shift_dataset_uri=str(ARXIV_CS), window=200, arxiv_share=0.25)
    iid, shifted = traffic(config)
    assert len(iid) == len(shifted) == 200 and not set(iid) & set(shifted)
    import pandas as pd

    test = pd.read_csv(AG_NEWS / "test.csv.gz", dtype=str, keep_default_na=False)
    names = dict(zip((test["title"].str.strip() + " " + test["description"].str.strip()).str.strip(), test["label"],
                     strict=False))
    from_ag_news = [names[text] for text in shifted if text in names]
    assert len(from_ag_news) == 150  # 25% of the window came from arXiv
    assert set(from_ag_news) <= {"3", "4"}  # Business and Sci/Tech only
    assert len({names.get(text) for text in iid}) == 4


@requires_ag_news
def test_new_rows_are_real_labelled_training_rows(tmp_path):
    config = LoopConfig(dataset_uri=str(AG_NEWS), shift_dataset_uri=str(ARXIV_CS), new_rows=50)
    import pandas as pd

    frame = pd.read_csv(write_new_rows(config, tmp_path / "new") / "train.csv.gz", dtype=str)
    assert list(frame.columns) == ["label", "title", "description"] and len(frame) == 50


def test_loop_config_names_a_missing_dataset(tmp_path):
    with pytest.raises(ConfigError, match="dataset_uri: no test.csv.gz"):
        LoopConfig(dataset_uri=str(tmp_path), shift_dataset_uri=str(tmp_path))


def test_timeline_renders_in_order(capsys):
    timeline = Timeline()
    timeline.add("first")
    timeline.add("second", run="r1")
    assert [event["event"] for event in timeline.events] == ["first", "second"]
    assert "first" in capsys.readouterr().out and timeline.render().splitlines()[1].endswith("second")
