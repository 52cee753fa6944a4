"""Progress lines of long work: done of a total, the rate and the time left."""

import pandas as pd

from shared.io import count_table_rows
from shared.scoring import Progress


def test_a_line_with_a_total_gives_the_share_done_the_rate_and_the_time_left():
    line = Progress("scoring a.csv", total=1000).line(250, elapsed=5.0)
    assert line == "scoring a.csv: 250 / 1,000 rows (25%, 50 rows/s, ETA 15 s)"


def test_an_estimated_total_is_marked_and_never_falls_below_the_rows_done():
    meter = Progress("scoring a.csv", total=100, estimated=True)
    assert "/ ~100 rows" in meter.line(50, elapsed=1.0)
    assert "120 / 120 rows (100%" in meter.line(120, elapsed=1.0)


def test_without_a_total_the_line_says_the_rate_and_the_time_so_far():
    line = Progress("reading", unit="files").line(30, elapsed=75.0)
    assert line == "reading: 30 files (0.4 files/s, 1 min 15 s so far)"


def test_long_times_left_read_in_hours():
    assert "ETA 2 h 00 min" in Progress("x", total=7201).line(1, elapsed=1.0)


def test_row_counts_for_a_progress_total(tmp_path):
    text = tmp_path / "t.csv"
    text.write_text("a,b\n1,2\n3,4\n5,6")  # no newline after the last row
    assert count_table_rows(text) == 3
    parquet = tmp_path / "t.parquet"
    pd.DataFrame({"a": range(7)}).to_parquet(parquet)
    assert count_table_rows(parquet) == 7
    assert count_table_rows(tmp_path / "missing.csv") is None
