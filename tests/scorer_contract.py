"""The bad-input table every scorer keeps, in the spirit of scikit-learn's `check_estimator`.

A scorer registers by subclassing `ScorerContract` in `tests/apps/<app>/test_bad_inputs.py`
(tests/test_registry.py checks every app does): `APP`, `INPUT` ("table" or "files"), a
`scoring_run` fixture `(run folder, CLI args reaching it)` and, for tables, the column hooks.
Every case of `CASES` that applies to its input kind then runs through `deepfield <app>
score` and must end in one of two ways:

- a whole-file problem: exit 2, exactly one `error:` line, no traceback, nothing written;
- row-level problems: exit 0, no traceback, and every input row (or file) in the outputs or
  the rejects, numbered 1..n, each reject with its reason; rows the case did not touch score
  exactly as they do in the clean input.
"""

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from shared.cli import main

GOOD_ROWS = 6  # rows (or files) of the clean input each case starts from
CLEAN_SCORES: dict = {}  # run folder -> its clean input's scores


@dataclasses.dataclass(frozen=True)
class Expect:
    whole_file: bool = False  # one line of error, exit 2, nothing written
    rows: int | None = None  # input rows (or files): scored + rejected
    rejected_at_least: int = 0  # rows (or files) that must be rejects
    same_as_clean: tuple[int, ...] = ()  # these 1-based rows score as in the clean input
    either: bool = False  # a whole-file error or the row accounting above are both right


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    inputs: frozenset  # the scorer input kinds it applies to: "table", "files"
    build: Callable  # (contract, run, tmp_path) -> (input args, Expect, extra CLI args)

    def applies(self, contract) -> bool:
        kinds = {contract.INPUT, *contract.ALSO}
        return bool(kinds & self.inputs) and self.name not in contract.NOT_APPLICABLE


class ScorerContract:
    APP = ""  # the registry name of the app
    INPUT = "table"  # "table" (CSV rows) or "files" (media files and folders)
    ALSO: tuple[str, ...] = ()  # further input kinds the scorer takes ("npz")
    NOT_APPLICABLE: dict[str, str] = {}  # case name -> why it does not apply to this scorer
    REQUIRED_COLUMN = ""  # tables: a column the scorer cannot do without
    NUMERIC_COLUMN: str | None = None  # tables: a numeric feature column (NaN/inf cases)
    TEXT_COLUMN: str | None = None  # tables: a free-text or category column (bytes cases)
    SUFFIX = ".png"  # files: the media suffix

    # --- hooks ---------------------------------------------------------------------------------

    def good_table(self, run: Path) -> pd.DataFrame:
        """GOOD_ROWS valid scoring rows, as strings (default: the test split evaluate wrote)."""
        test_input = json.loads((run / "metrics.json").read_text())["test_input"]
        return pd.read_csv(run / test_input, dtype=str, keep_default_na=False).head(GOOD_ROWS)

    def good_files(self, run: Path, tmp_path: Path) -> list[Path]:
        """GOOD_ROWS valid media files (default: the first of the test list evaluate wrote)."""
        test_input = json.loads((run / "metrics.json").read_text())["test_input"]
        lines = (run / test_input.removeprefix("@")).read_text().splitlines()
        return [Path(line) for line in lines[:GOOD_ROWS]]

    def required_column(self, run: Path) -> str:
        """A column the scorer cannot do without (default REQUIRED_COLUMN)."""
        return self.REQUIRED_COLUMN

    def unknown_id_row(self, row: dict) -> dict | None:
        """The row with an id the model never saw (recsys), or None where ids are free."""
        return None

    # --- the test ------------------------------------------------------------------------------

    def test_bad_input(self, scoring_run, tmp_path, capsys, case):
        run, args = scoring_run
        inputs, expect, extra = case.build(self, run, tmp_path)
        if "--output" in extra:
            target = Path(extra[extra.index("--output") + 1])
        else:
            target = tmp_path / "out" / "scores.csv"
            target.parent.mkdir(exist_ok=True)
            extra = [*extra, "--output", str(target)]
        code = main([self.APP, "score", *args, *extra, "--input", *map(str, inputs)])
        captured = capsys.readouterr()
        text = captured.out + captured.err
        assert "Traceback" not in text, text[-2000:]
        rejects = target.with_name(f"{target.stem}.rejects.csv")
        if expect.whole_file or (expect.either and code == 2):
            errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
            assert code == 2 and len(errors) == 1, captured.err[-2000:]
            assert not (target.is_file() or rejects.is_file()), "a failed run wrote output"
            return
        assert code == 0, captured.err[-2000:]
        self.check_accounting(target, rejects, expect, run, args, tmp_path, case)

    def check_accounting(self, target, rejects, expect, run, args, tmp_path, case):
        scored = pd.read_csv(target, dtype=str, keep_default_na=False)
        rejected = pd.read_csv(rejects, dtype=str, keep_default_na=False)
        rows = sorted(int(r) for r in [*scored["row"], *rejected["row"]])
        assert rows == list(range(1, expect.rows + 1)), (rows, expect.rows)
        assert len(rejected) >= expect.rejected_at_least, rejected.to_dict("records")
        assert all(reason.strip() for reason in rejected["reason"]), rejected
        if expect.same_as_clean:
            clean = self.clean_scores(run, args, tmp_path)
            for row in expect.same_as_clean:
                got = scored[scored["row"] == str(row)].drop(columns=["row"])
                want = clean[clean["row"] == str(row)].drop(columns=["row"])
                assert len(got) == 1, f"{case.name}: row {row} was not scored"
                assert got.iloc[0].to_dict() == want.iloc[0].to_dict(), (case.name, row)

    def clean_scores(self, run: Path, args: list, tmp_path: Path) -> pd.DataFrame:
        """The clean input's scores, computed once per run (the cases compare against them)."""
        if run not in CLEAN_SCORES:
            source = write_table(self.good_table(run), tmp_path / "clean" / "clean.csv")
            out = tmp_path / "clean" / "scores.csv"
            command = [self.APP, "score", *args, "--input", str(source), "--output", str(out)]
            assert main(command) == 0
            CLEAN_SCORES[run] = pd.read_csv(out, dtype=str, keep_default_na=False)
        return CLEAN_SCORES[run]


def parametrize_cases(metafunc) -> None:
    """Parametrize `case` of a ScorerContract subclass with every case that applies to it
    (called from tests/conftest.py's pytest_generate_tests)."""
    chosen = [c for c in CASES if c.applies(metafunc.cls)]
    metafunc.parametrize("case", chosen, ids=[c.name for c in chosen])


# --- building inputs ---------------------------------------------------------------------------


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def write_named(tmp_path: Path, name: str, lines: list[str]) -> Path:
    """`lines` as the file `tmp_path/name`, one per line (UTF-8)."""
    return write_lines(tmp_path, lines, name)


def score_frames(app: str, sets, path, tmp_path, *extra) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`deepfield <app> score` on `path` (must exit 0): its outputs and rejects, as strings."""
    out = tmp_path / f"{Path(path).stem}.scores.csv"
    assert main([app, "score", *sets, *extra, "--input", str(path), "--output", str(out)]) == 0
    rejects = out.with_name(f"{out.stem}.rejects.csv")
    return (
        pd.read_csv(out, dtype=str, keep_default_na=False),
        pd.read_csv(rejects, dtype=str, keep_default_na=False),
    )


def table_lines(contract, run, tmp_path) -> list[str]:
    """The clean table's lines: header first (CSV as pandas writes it)."""
    path = write_table(contract.good_table(run), tmp_path / "good.csv")
    return path.read_text(encoding="utf-8").splitlines()


def write_lines(tmp_path: Path, lines: list[str], name: str = "input.csv") -> Path:
    path = tmp_path / name
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def table_case(name: str, build) -> Case:
    return Case(name, frozenset({"table"}), build)


def file_case(name: str, build) -> Case:
    return Case(name, frozenset({"files"}), build)


def any_case(name: str, build) -> Case:
    return Case(name, frozenset({"table", "files"}), build)


ALL = tuple(range(1, GOOD_ROWS + 1))


def _clean(c, run, tmp):
    return [write_lines(tmp, table_lines(c, run, tmp))], Expect(rows=GOOD_ROWS), []


def _extra_field_first_row(c, run, tmp):
    lines = table_lines(c, run, tmp)
    lines[1] += ",X1,X2"
    expect = Expect(rows=GOOD_ROWS, rejected_at_least=1, same_as_clean=ALL[1:])
    return [write_lines(tmp, lines)], expect, []


def _ragged_short_row(c, run, tmp):
    lines = table_lines(c, run, tmp)
    lines[3] = lines[3].rsplit(",", 1)[0]
    expect = Expect(rows=GOOD_ROWS, rejected_at_least=1, same_as_clean=(1, 2, 4, 5, 6))
    return [write_lines(tmp, lines)], expect, []


def _blank_line(c, run, tmp):
    """A blank line between data rows is a row of the file: a reject, so numbers match."""
    lines = table_lines(c, run, tmp)
    lines.insert(4, "")
    expect = Expect(rows=GOOD_ROWS + 1, rejected_at_least=1, same_as_clean=(1, 2, 3))
    return [write_lines(tmp, lines)], expect, []


def _utf8_bom(c, run, tmp):
    path = write_lines(tmp, table_lines(c, run, tmp))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    return [path], Expect(rows=GOOD_ROWS, same_as_clean=ALL), []


def _missing_column(c, run, tmp):
    frame = c.good_table(run).drop(columns=[c.required_column(run)])
    return [write_table(frame, tmp / "input.csv")], Expect(whole_file=True), []


def _extra_column(c, run, tmp):
    frame = c.good_table(run).assign(zz_unused="x")
    return [write_table(frame, tmp / "input.csv")], Expect(rows=GOOD_ROWS, same_as_clean=ALL), []


def _nan_and_inf(c, run, tmp):
    frame = c.good_table(run)
    frame.loc[1, c.NUMERIC_COLUMN] = "nan"
    frame.loc[2, c.NUMERIC_COLUMN] = "inf"
    expect = Expect(rows=GOOD_ROWS, rejected_at_least=2, same_as_clean=(1, 4, 5, 6))
    return [write_table(frame, tmp / "input.csv")], expect, []


def _wrong_type(c, run, tmp):
    frame = c.good_table(run)
    frame.loc[1, c.NUMERIC_COLUMN] = "twelve"
    expect = Expect(rows=GOOD_ROWS, rejected_at_least=1, same_as_clean=(1, 3, 4, 5, 6))
    return [write_table(frame, tmp / "input.csv")], expect, []


def _non_utf8_cell(c, run, tmp):
    path = write_table(c.good_table(run), tmp / "input.csv")
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b",", b",\xff\xfe", 1)
    path.write_bytes(b"\n".join(lines))
    return [path], Expect(rows=GOOD_ROWS, same_as_clean=(1, 3, 4, 5, 6)), []


def _broken_quote(c, run, tmp):
    lines = table_lines(c, run, tmp)
    lines[2] = lines[2].replace(",", ',"unterminated', 1)
    return [write_lines(tmp, lines)], Expect(rows=GOOD_ROWS, either=True), []


def _duplicate_rows(c, run, tmp):
    frame = c.good_table(run)
    doubled = pd.concat([frame, frame], ignore_index=True)
    return [write_table(doubled, tmp / "input.csv")], Expect(rows=2 * GOOD_ROWS), []


def _unknown_ids(c, run, tmp):
    frame = c.good_table(run)
    frame.iloc[1] = pd.Series(c.unknown_id_row(frame.iloc[1].to_dict()))
    expect = Expect(rows=GOOD_ROWS, rejected_at_least=1, same_as_clean=(1, 3, 4, 5, 6))
    return [write_table(frame, tmp / "input.csv")], expect, []


def _empty_file(c, run, tmp):
    path = tmp / "input.csv"
    path.write_bytes(b"")
    return [path], Expect(whole_file=True), []


def _header_only(c, run, tmp):
    return [write_lines(tmp, table_lines(c, run, tmp)[:1])], Expect(rows=0, either=True), []


def _corrupt_parquet(c, run, tmp):
    path = tmp / "input.parquet"
    path.write_bytes(b"PAR1 this is not a parquet file PAR1")
    return [path], Expect(whole_file=True), []


def _unsupported_suffix(c, run, tmp):
    path = tmp / "input.xlsx"
    path.write_bytes(b"PK\x03\x04 not a table the app reads")
    return [path], Expect(whole_file=True), []


def _missing_path(c, run, tmp):
    return [tmp / "nowhere" / "input.csv"], Expect(whole_file=True), []


def _good_input(c, run, tmp):
    if c.INPUT == "table":
        return write_lines(tmp, table_lines(c, run, tmp))
    folder = tmp / "good"
    folder.mkdir(exist_ok=True)
    for i, source in enumerate(c.good_files(run, tmp)):
        shutil.copyfile(source, folder / f"{i}{c.SUFFIX}")
    return folder


def _output_is_a_folder(c, run, tmp):
    target = tmp / "taken"
    target.mkdir()
    return [_good_input(c, run, tmp)], Expect(whole_file=True), ["--output", str(target)]


def _output_under_a_file(c, run, tmp):
    blocker = tmp / "blocker"
    blocker.write_text("a file, not a folder\n")
    return (
        [_good_input(c, run, tmp)],
        Expect(whole_file=True),
        ["--output", str(blocker / "scores.csv")],
    )


def _run_of_another_app(c, run, tmp):
    other = tmp / "other-run"
    other.mkdir()
    meta = json.loads((run / "model_meta.json").read_text()) | {"app": "some-other-app"}
    (other / "model_meta.json").write_text(json.dumps(meta))
    (other / "config.yaml").write_text((run / "config.yaml").read_text())
    return [_good_input(c, run, tmp)], Expect(whole_file=True), ["--run", str(other)]


# --- media files -------------------------------------------------------------------------------


def _folder_of(c, run, tmp, name="in") -> Path:
    folder = tmp / name
    folder.mkdir(exist_ok=True)
    for i, source in enumerate(c.good_files(run, tmp)[:4]):
        shutil.copyfile(source, folder / f"good{i}{c.SUFFIX}")
    return folder


def _files_clean(c, run, tmp):
    return [_folder_of(c, run, tmp)], Expect(rows=4), []


def _zero_byte_file(c, run, tmp):
    folder = _folder_of(c, run, tmp)
    (folder / f"zz_empty{c.SUFFIX}").write_bytes(b"")
    return [folder], Expect(rows=5, rejected_at_least=1), []


def _truncated_file(c, run, tmp):
    folder = _folder_of(c, run, tmp)
    good = c.good_files(run, tmp)[0].read_bytes()
    (folder / f"zz_truncated{c.SUFFIX}").write_bytes(good[: max(8, len(good) // 3)])
    return [folder], Expect(rows=5, rejected_at_least=1), []


def _not_media_with_media_suffix(c, run, tmp):
    folder = _folder_of(c, run, tmp)
    (folder / f"zz_text{c.SUFFIX}").write_text("this is text, not media\n")
    return [folder], Expect(rows=5, rejected_at_least=1), []


def _mixed_folder(c, run, tmp):
    folder = _folder_of(c, run, tmp)
    (folder / "README.txt").write_text("notes that came with the files\n")
    return [folder], Expect(rows=5, rejected_at_least=1), []


def _same_file_twice(c, run, tmp):
    one = _folder_of(c, run, tmp) / f"good0{c.SUFFIX}"
    return [one, one], Expect(rows=2), []


def _broken_symlink(c, run, tmp):
    folder = _folder_of(c, run, tmp)
    os.symlink(tmp / "gone" / f"x{c.SUFFIX}", folder / f"zz_dangling{c.SUFFIX}")
    return [folder], Expect(rows=5, rejected_at_least=1), []


def _non_utf8_file_name(c, run, tmp):
    folder = _folder_of(c, run, tmp)
    source = c.good_files(run, tmp)[0]
    target = os.path.join(os.fsencode(folder), b"zz_\xff\xfe" + c.SUFFIX.encode())
    shutil.copyfile(source, target)
    return [folder], Expect(rows=5), []


def _empty_folder(c, run, tmp):
    folder = tmp / "empty"
    folder.mkdir()
    return [folder], Expect(whole_file=True), []


def _huge_image(c, run, tmp):
    """A small file that decodes to 400 megapixels: refused before it is decoded."""
    from PIL import Image

    folder = _folder_of(c, run, tmp)
    Image.new("1", (20000, 20000)).save(folder / "zz_huge.png")
    return [folder], Expect(rows=5, rejected_at_least=1), []


def _list_with_a_missing_entry(c, run, tmp):
    """An @list file naming two files and one that is not there: the missing one is a reject."""
    folder = _folder_of(c, run, tmp)
    listed = [folder / f"good0{c.SUFFIX}", tmp / f"gone{c.SUFFIX}", folder / f"good1{c.SUFFIX}"]
    (tmp / "list.txt").write_text("".join(f"{p}\n" for p in listed))
    return [f"@{tmp / 'list.txt'}"], Expect(rows=3, rejected_at_least=1), []


def _upper_case_suffix(c, run, tmp):
    folder = _folder_of(c, run, tmp)
    shutil.copyfile(c.good_files(run, tmp)[0], folder / f"zz_LOUD{c.SUFFIX.upper()}")
    return [folder], Expect(rows=5), []


def _npz_without_images(c, run, tmp):
    import numpy as np

    folder = _folder_of(c, run, tmp)
    np.savez(folder / "zz_none.npz", images=np.zeros((0, 28, 28), np.uint8))
    return [folder], Expect(rows=5, rejected_at_least=1), []


def _npz_huge_images(c, run, tmp):
    """A compressed NPZ of a few hundred KB that holds a 144-megapixel image."""
    import numpy as np

    folder = _folder_of(c, run, tmp)
    np.savez_compressed(folder / "zz_huge.npz", images=np.zeros((1, 12000, 12000), np.uint8))
    return [folder], Expect(rows=5, rejected_at_least=1), []


CASES = [
    table_case("clean_table", _clean),
    table_case("extra_field_on_first_row", _extra_field_first_row),
    table_case("ragged_short_row", _ragged_short_row),
    table_case("blank_line_between_rows", _blank_line),
    table_case("utf8_bom", _utf8_bom),
    table_case("missing_required_column", _missing_column),
    table_case("extra_column", _extra_column),
    table_case("nan_and_inf", _nan_and_inf),
    table_case("wrong_type", _wrong_type),
    table_case("non_utf8_bytes_in_a_cell", _non_utf8_cell),
    table_case("broken_quotes", _broken_quote),
    table_case("duplicate_rows", _duplicate_rows),
    table_case("unknown_ids", _unknown_ids),
    table_case("empty_file", _empty_file),
    table_case("header_only", _header_only),
    table_case("corrupt_parquet", _corrupt_parquet),
    table_case("unsupported_suffix", _unsupported_suffix),
    any_case("missing_path", _missing_path),
    any_case("output_is_an_existing_folder", _output_is_a_folder),
    any_case("output_under_a_file", _output_under_a_file),
    any_case("run_of_another_app", _run_of_another_app),
    file_case("clean_folder", _files_clean),
    file_case("zero_byte_file", _zero_byte_file),
    file_case("truncated_file", _truncated_file),
    file_case("text_with_a_media_suffix", _not_media_with_media_suffix),
    file_case("mixed_folder", _mixed_folder),
    file_case("same_file_twice", _same_file_twice),
    file_case("broken_symlink_in_folder", _broken_symlink),
    file_case("non_utf8_file_name", _non_utf8_file_name),
    file_case("empty_folder", _empty_folder),
    file_case("huge_image", _huge_image),
    file_case("list_with_a_missing_entry", _list_with_a_missing_entry),
    file_case("upper_case_suffix", _upper_case_suffix),
    Case("npz_without_images", frozenset({"npz"}), _npz_without_images),
    Case("npz_with_a_huge_image", frozenset({"npz"}), _npz_huge_images),
]
