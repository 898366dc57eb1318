"""The manifest's optional `news` key: parsed, read into the canonical news table, checked."""

from __future__ import annotations

import datetime as dt

import pytest

from cbi_platform.market.files import load_files_source
from cbi_platform.market.manifest import NewsSpec, load_manifest
from cbi_platform.market.schema import NEWS_SCHEMA, MarketDataError


def _with_news(manifest, news_yaml: str):
    manifest.write_text(manifest.read_text() + news_yaml)
    return manifest


def test_news_file_becomes_the_bundles_news(small_manifest):
    (small_manifest.parent / "news.csv").write_text(
        "time,title,text,wire\n"
        "2019-01-07 15:00:00+00:00,Soybean oil rallies on biofuel demand,Strong demand.,W1\n"
        "2019-01-08 19:00:00+00:00,After the close,Counts the next day.,W2\n"
        "2019-01-12 09:00:00+00:00,Saturday item,,W1\n"
        "2019-01-09 10:00:00+00:00,,,W1\n"
    )
    _with_news(
        small_manifest,
        "news: {path: news.csv, date_column: time, headline_column: title, body_column: text,"
        " source_column: wire, session_offset_hours: 5.67}\n",
    )
    spec = load_manifest(small_manifest).news
    assert spec == NewsSpec(
        path="news.csv",
        format="csv",
        date_column="time",
        headline_column="title",
        body_column="text",
        source_column="wire",
        session_offset_hours=5.67,
    )
    bundle = load_files_source(small_manifest)
    news = bundle.news
    assert news.schema == NEWS_SCHEMA
    assert news["published_at"].to_list() == [
        dt.date(2019, 1, 7),
        dt.date(2019, 1, 9),  # 19:00 UTC + 5.67 h: after the close, the next day
        dt.date(2019, 1, 14),  # Saturday: Monday
    ]
    assert news["source"].to_list() == ["W1", "W2", "W1"] and news["body"][2] is None
    assert any("1 row(s) with neither headline nor body dropped" in n for n in bundle.notices)
    assert not any("has no news" in n for n in bundle.notices)


def test_without_news_key_the_bundle_is_as_before(small_manifest):
    bundle = load_files_source(small_manifest)
    assert load_manifest(small_manifest).news is None
    assert bundle.news.height == 0 and bundle.news.schema == NEWS_SCHEMA
    assert any("has no news: news is empty" in n for n in bundle.notices)


def test_defaults_source_name_and_lag(small_manifest):
    (small_manifest.parent / "news.csv").write_text(
        "published_at,headline\n2019-01-04,Friday news\n"
    )
    _with_news(small_manifest, "news: {path: news.csv, publication_lag: 1}\n")
    news = load_files_source(small_manifest).news
    assert news.row(0) == (dt.date(2019, 1, 7), "Friday news", None, "files:small")


@pytest.mark.parametrize(
    ("news_yaml", "message"),
    [
        ("news: {path: news.csv, headline: x}\n", "unknown key 'headline'"),
        ("news: {headline_column: x}\n", "'path' is required"),
        ("news: {path: news.txt}\n", "cannot infer the format"),
        ("news: {path: news.csv, body_column: summary}\n", "no column 'summary'"),
        ("news: {path: missing.csv}\n", "file not found"),
    ],
)
def test_bad_news_entries_name_the_problem(small_manifest, news_yaml, message):
    (small_manifest.parent / "news.csv").write_text("published_at,headline\n2019-01-04,x\n")
    _with_news(small_manifest, news_yaml)
    with pytest.raises(MarketDataError, match=message) as error:
        load_files_source(small_manifest)
    assert str(small_manifest.name) in str(error.value)
