"""Text readers on small files written in the public layouts; labels, splits, bad input."""

import json

import numpy as np
import pytest

from apps.nlp.text import data as tdata
from apps.nlp.text.config import DataConfig
from apps.nlp.text.sample import generate_reviews
from shared.io import DataError


def read(path, fmt="auto", delimiter="", text="text", label="label", **keys):
    cfg = DataConfig(
        source="files",
        path=path if isinstance(path, list) else str(path),
        format=fmt,
        text_column=text,
        label_column=label,
        label_delimiter=delimiter,
        val_fraction=0.2,
        test_fraction=0.2,
        **keys,
    )
    cfg.validate()
    return tdata.read(cfg, seed=0)


def test_csv_with_configured_columns_and_rejects(tmp_path):
    path = tmp_path / "reviews.csv"
    rows = ["review,stars", '"good, really good",5', "bad,1", ",5", "meh,", "fine,5"]
    rows += [f"text {i},{1 if i % 2 else 5}" for i in range(20)]
    path.write_text("\n".join(rows) + "\n")
    data = read(path, text="review", label="stars")
    assert data.class_names == ["1", "5"]  # integer labels, numeric order
    assert sum(len(p) for p in data.splits.values()) == 23
    assert [r[1] for r in data.rejects] == ["empty text", "missing label"]
    assert data.rejects[0][0] == "reviews.csv:4"  # the line in the file


def test_glue_tsv_works_as_is_and_keeps_quotes(tmp_path):
    path = tmp_path / "train.tsv"
    lines = ["sentence\tlabel", 'it \'s a "charming" film \t1', "a dull , lifeless mess \t0"]
    lines += [f"sentence number {i} \t{i % 2}" for i in range(10)]
    path.write_text("\n".join(lines) + "\n")
    data = read(path)
    texts = [t for s in data.splits.values() for t in s.texts]
    assert 'it \'s a "charming" film ' in texts  # GLUE is unquoted: quotes are text
    assert data.class_names == ["0", "1"] and data.format == "tsv"


def test_headerless_label_last_uci_layout_with_bad_bytes(tmp_path):
    path = tmp_path / "amazon_cells_labelled.txt"
    body = b"So there is no way for me to plug it in here.\t0\n"
    body += b"Good case, Excellent value.\t1\n"
    body += b"Caf\xe9 \xff\xfe quality\t1\n"  # Latin-1 and junk bytes: not UTF-8
    body += b"no label here\n"
    body += b"".join(f"line {i} is fine\t{i % 2}\n".encode() for i in range(10))
    path.write_bytes(body)
    data = read(path)
    assert data.format == "lines"
    assert data.replaced_bytes == 3  # \xe9, \xff and \xfe: each an invalid byte
    assert data.rejects == [("amazon_cells_labelled.txt:4", "no tab before the label")]
    texts = [t for s in data.splits.values() for t in s.texts]
    assert any("\ufffd" in t for t in texts) and len(texts) == 13


def test_headerless_tsv_is_detected(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("".join(f"a sentence {i}\t{'ab'[i % 2]}\n" for i in range(12)))
    data = read(path)
    assert data.class_names == ["a", "b"] and sum(len(p) for p in data.splits.values()) == 12


def test_jsonl_with_own_splits_and_bad_lines(tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [{"text": f"doc {i}", "label": i % 2, "split": "train"} for i in range(12)]
    rows += [{"text": f"test doc {i}", "label": i % 2, "split": "test"} for i in range(4)]
    lines = [json.dumps(r) for r in rows] + ["{not json", "[1, 2]", json.dumps({"body": "x"})]
    path.write_text("\n".join(lines) + "\n")
    data = read(path, split_column="split")
    assert data.own_splits == ["test", "train"]
    assert len(data.splits["test"]) == 4 and len(data.splits["val"]) > 0
    reasons = [r[1] for r in data.rejects]
    assert reasons[0].startswith("not valid JSON") and reasons[1] == "not a JSON object"
    assert "no text column" in reasons[2]


def test_multi_label_via_delimiter(tmp_path):
    path = tmp_path / "topics.csv"
    labels = ["sports|politics", "sports", "tech", "tech|politics"] * 5
    path.write_text("text,label\n" + "".join(f"story {i},{v}\n" for i, v in enumerate(labels)))
    data = read(path, delimiter="|")
    assert data.multi_label and data.class_names == ["politics", "sports", "tech"]
    everything = np.concatenate([s.labels for s in data.splits.values()])
    assert everything.shape == (20, 3) and everything.sum() == 30


def test_acl_imdb_folder_layout(tmp_path):
    root = tmp_path / "aclImdb"
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(5):
                (folder / f"{i}_{7 if label == 'pos' else 2}.txt").write_text(f"{label} review {i}")
    (root / "train" / "unsup").mkdir()
    (root / "train" / "unsup" / "0_0.txt").write_text("no label")
    (root / "test" / "neg" / "bad.txt").write_bytes(b"broken \x80 bytes")
    data = read(root)
    assert data.format == "folder" and data.own_splits == ["test", "train"]
    assert (
        len(data.splits["test"]) == 11 and len(data.splits["train"]) + len(data.splits["val"]) == 10
    )
    assert data.replaced_bytes == 1 and data.class_names == ["neg", "pos"]


def test_seeded_stratified_split_is_repeatable(tmp_path):
    path = tmp_path / "reviews.csv"
    generate_reviews(200, seed=3).to_csv(path, index=False)
    a, b = read(path), read(path)
    assert a.splits["test"].texts == b.splits["test"].texts
    for split in a.splits.values():
        assert abs(split.labels.mean() - a.splits["train"].labels.mean()) < 0.15


@pytest.mark.parametrize(
    "content,suffix,message",
    [
        ("", ".csv", "the file is empty"),
        ("words,stars\nhello,1\n", ".csv", "no text column 'text'"),
        ("text,label\nx,a\ny,a\n", ".csv", "need at least two classes"),
        ("{}", ".parquet", "cannot tell the format"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, content, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read(path)


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        read(tmp_path / "nope.csv")


def test_generator_is_seeded_and_needs_word_order():
    a, b = generate_reviews(300, seed=1), generate_reviews(300, seed=1)
    assert a.equals(b) and set(a.label) == {"positive", "negative"}
    texts = " ".join(a.text)
    assert " not " in texts and " but " in texts and "although" in texts.lower()
    lengths = a.text.str.split().str.len()
    assert lengths.min() < 10 and lengths.max() > 30


# Records end at \n or \r\n only: U+0085 (NEL) and U+2028 (LINE SEPARATOR) occur inside real
# sentences, and str.splitlines() would cut the record there.
INNER_BREAKS = "a caf\u00e9\u0085 with a\u2028line separator inside"


@pytest.mark.parametrize(
    "name,fmt,header,body,keys",
    [
        ("data.csv", "auto", "text,label\r\n", '"{t}",pos\r\nplain,neg\r\n', {}),
        ("data.tsv", "auto", "sentence\tlabel\r\n", "{t}\tpos\r\nplain\tneg\r\n", {}),
        ("data.txt", "auto", "", "{t}\tpos\r\nplain\tneg\r\n", {}),
        (
            "data.jsonl",
            "auto",
            "",
            '{{"text": "{t}", "label": "pos"}}\r\n{{"text": "plain", "label": "neg"}}\r\n',
            {},
        ),
        (
            "SMSSpamCollection",
            "tsv",
            "",
            "pos\t{t}\r\nneg\tplain\r\n",
            {"columns": ["label", "text"]},
        ),
    ],
)
def test_records_end_at_newline_only_not_at_unicode_line_breaks(
    tmp_path, name, fmt, header, body, keys
):
    path = tmp_path / name
    path.write_bytes((header + body.format(t=INNER_BREAKS) * 3).encode("utf-8"))
    data = read(path, fmt, **keys)
    texts = [t for s in data.splits.values() for t in s.texts]
    assert sorted(texts) == sorted([INNER_BREAKS, "plain"] * 3)  # one record each, no \r left
    assert not data.rejects


def test_file_label_text_with_unicode_line_break_is_one_record(tmp_path):
    for label in ("pos", "neg"):
        lines = [f"{label} sentence {i} . " for i in range(5)] + [f"{label} {INNER_BREAKS}"]
        (tmp_path / f"rt-polarity.{label}").write_bytes("\n".join(lines).encode() + b"\n")
    data = read(str(tmp_path / "rt-polarity.*"), "file_label")
    assert sum(len(s) for s in data.splits.values()) == 12


def test_csv_keeps_quoted_newlines_and_lone_carriage_returns_and_cites_lines(tmp_path):
    path = tmp_path / "reviews.csv"
    rows = ["text,label", '"two\nlines",pos', "a lone\rreturn,neg", "", ",pos", "x,y,z"]
    rows += [f"text {i},{'pos' if i % 2 else 'neg'}" for i in range(10)]
    path.write_bytes("\n".join(rows).encode() + b"\n")
    data = read(path)
    texts = [t for s in data.splits.values() for t in s.texts]
    assert "two\nlines" in texts and "a lone\rreturn" in texts
    # The quoted record spans lines 2-3 and line 5 is blank: later lines keep their numbers.
    assert data.rejects == [
        ("reviews.csv:7", "3 fields, expected 2"),
        ("reviews.csv:6", "empty text"),
    ]


def test_unterminated_quote_is_one_error_with_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('text,label\nfine,pos\n"never closed,neg\nmore,pos\n')
    with pytest.raises(DataError, match="bad.csv:3: malformed CSV"):
        read(path)


def write_reviews_csv(path, rows, offset=0):
    lines = ["text,label"] + [
        f"review {offset + i},{'pos' if i % 2 else 'neg'}" for i in range(rows)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_list_and_glob_paths_are_one_dataset_in_a_fixed_order(tmp_path):
    b = write_reviews_csv(tmp_path / "part-b.csv", 10, offset=100)
    a = write_reviews_csv(tmp_path / "part-a.csv", 10)
    (tmp_path / "part-a.csv").write_text(a.read_text() + ",pos\n")  # one reject, cited by name
    listed = read([str(b), str(a)])
    globbed = read(str(tmp_path / "part-*.csv"))
    assert listed.files == [str(b), str(a)]  # a list in the order given
    assert globbed.files == [str(a), str(b)]  # a glob's matches sorted by name
    for data in (listed, globbed):
        assert sum(len(s) for s in data.splits.values()) == 20
        assert data.rejects == [("part-a.csv:12", "empty text")]


@pytest.mark.parametrize(
    "paths,message",
    [
        (["nothing-*.csv"], "no file matches this pattern"),
        (["part-a.csv", "part-a.csv"], "named twice in data.path"),
        (["part-a.csv", "other.jsonl"], "files of different formats"),
    ],
)
def test_bad_path_lists_are_one_clear_error(tmp_path, paths, message):
    write_reviews_csv(tmp_path / "part-a.csv", 10)
    (tmp_path / "other.jsonl").write_text('{"text": "x", "label": "pos"}\n')
    with pytest.raises(DataError, match=message):
        read([str(tmp_path / p) for p in paths])


def write_rt_polarity(folder, encoding_test_bytes=True):
    """rt-polarity.pos/.neg as published: cp1252, lower-cased, tokenised, ' \\n' line ends."""
    pos = [
        b'the rock is destined to be the 21st century\'s new " conan " . ',
        b"a caf\xe9 of a film , simply gorgeous . ",  # \xe9: e-acute in cp1252
        b"it's a \x93charming\x94 and often affecting journey . ",
    ]  # cp1252 curly quotes
    pos += [f"a fine and lovely film number {i} . ".encode() for i in range(7)]
    neg = [b"simplistic , silly and tedious . ", b"a broken \x81 byte nobody can decode . "]
    neg += [f"a dull and boring film number {i} . ".encode() for i in range(8)]
    (folder / "rt-polarity.pos").write_bytes(b"\n".join(pos) + b"\n")
    (folder / "rt-polarity.neg").write_bytes(b"\n".join(neg) + b"\n")
    (folder / "rt-polaritydata.README.1.0.txt").write_text("README v1.0\n")
    return folder


def test_rt_polarity_label_from_file_name_in_cp1252(tmp_path):
    folder = write_rt_polarity(tmp_path)
    paths = [str(folder / "rt-polarity.pos"), str(folder / "rt-polarity.neg")]
    data = read(paths, "file_label", encoding="cp1252")
    assert data.class_names == ["neg", "pos"] and data.format == "file_label"
    texts = {
        t: data.class_names[int(y)]
        for s in data.splits.values()
        for t, y in zip(s.texts, s.labels, strict=True)
    }
    assert len(texts) == 20
    assert texts["a caf\u00e9 of a film , simply gorgeous . "] == "pos"
    assert texts["it's a \u201ccharming\u201d and often affecting journey . "] == "pos"
    assert data.replaced_bytes == 1  # 0x81 is undefined in cp1252: U+FFFD, counted
    assert texts["a broken \ufffd byte nobody can decode . "] == "neg"
    utf8 = read(paths, "file_label")  # the same bytes read as UTF-8: each non-ASCII byte lost
    assert utf8.replaced_bytes == 4
    globbed = read(str(folder / "rt-polarity.*"), "file_label", encoding="cp1252")
    assert len(globbed.files) == 2  # the README does not match the pattern


def test_label_from_file_name_rule():
    assert tdata.label_from_name(tdata.Path("rt-polarity.pos")) == "pos"
    assert tdata.label_from_name(tdata.Path("positive.txt")) == "positive"
    assert tdata.label_from_name(tdata.Path("spam")) == "spam"


def write_sms_spam(path):
    """SMSSpamCollection as published: `label<TAB>text`, no header, no extension, quotes kept."""
    lines = [
        "ham\tGo until jurong point, crazy.. Available only in bugis n great world la e",
        "ham\tOk lar... Joking wif u oni...",
        "spam\tFree entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005. Text FA",
        'ham\tHe said "u r late" & left :-(',
        "spam\tWINNER!! As a valued network customer you have been selected",
        "ham\tone\ttab too many",
    ]
    lines += [
        f"{'spam' if i % 4 == 0 else 'ham'}\tmessage number {i} see you soon" for i in range(20)
    ]
    path.write_bytes("\n".join(lines).encode("utf-8") + b"\n")
    return path


def test_sms_spam_label_first_headerless_tsv(tmp_path):
    path = write_sms_spam(tmp_path / "SMSSpamCollection")
    data = read(path, "tsv", columns=["label", "text"])
    assert data.class_names == ["ham", "spam"]
    texts = {
        t: data.class_names[int(y)]
        for s in data.splits.values()
        for t, y in zip(s.texts, s.labels, strict=True)
    }
    assert texts['He said "u r late" & left :-('] == "ham"  # quotes are text in a TSV
    assert texts["Ok lar... Joking wif u oni..."] == "ham" and len(texts) == 25
    assert data.rejects == [("SMSSpamCollection:6", "3 fields, expected 2")]


def test_headerless_csv_through_columns(tmp_path):
    path = tmp_path / "reviews.csv"
    rows = ['pos,"good, really good",train', "neg,bad,test", "neg,,train"]
    rows += [f"{'pos' if i % 2 else 'neg'},text {i},train" for i in range(10)]
    path.write_text("\n".join(rows) + "\n")
    data = read(path, columns=["label", "text", "fold"], split_column="fold")
    assert "good, really good" in data.splits["train"].texts + data.splits["val"].texts
    assert data.splits["test"].texts == ["bad"]
    assert data.rejects == [("reviews.csv:3", "empty text")]  # no header: line 1 is a record


def test_label_first_tsv_read_without_columns_is_an_error_not_a_swap(tmp_path):
    path = write_sms_spam(tmp_path / "SMSSpamCollection")
    with pytest.raises(DataError, match=r"label looks like it comes first.*data.columns"):
        read(path, "tsv")
    with pytest.raises(DataError, match="cannot tell the format"):
        read(path)  # no extension: the layout has to be named


def write_split_csv(path, names):
    rows = ["text,label,fold"]
    for split, count in names.items():
        rows += [f"{split} text {i},{'ab'[i % 2]}" + f",{split}" for i in range(count)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_split_column_dev_is_validation_by_default(tmp_path):
    path = write_split_csv(tmp_path / "data.csv", {"train": 20, "dev": 6, "Test ": 4})
    data = read(path, split_column="fold")
    assert data.own_splits == ["test", "train", "val"]
    for split, prefix, count in (("train", "train", 20), ("val", "dev", 6), ("test", "Test", 4)):
        assert len(data.splits[split]) == count
        assert all(t.startswith(prefix) for t in data.splits[split].texts)


def test_split_column_dev_as_test_with_validation_carved_from_train(tmp_path):
    path = write_split_csv(tmp_path / "glue.csv", {"train": 20, "dev": 6})  # GLUE: no test
    data = read(path, split_column="fold", dev_split="test")
    assert data.own_splits == ["test", "train"]
    assert len(data.splits["test"]) == 6
    assert all(t.startswith("dev") for t in data.splits["test"].texts)
    assert len(data.splits["val"]) == 4 and len(data.splits["train"]) == 16  # 0.2, seeded
    assert all(t.startswith("train") for t in data.splits["val"].texts)


def test_unknown_split_value_is_one_error(tmp_path):
    path = write_split_csv(tmp_path / "data.csv", {"train": 10, "holdout": 3})
    with pytest.raises(DataError, match="unknown split value.*'holdout'"):
        read(path, split_column="fold")
    with pytest.raises(DataError, match="no split column 'split'"):
        read(path, split_column="split")


def test_unknown_split_value_stops_prepare_with_one_line(tmp_path, capsys):
    from shared.cli import main

    path = write_split_csv(tmp_path / "data.csv", {"train": 10, "holdout": 3})
    sets = [
        "data.source=files",
        f"data.path={path}",
        "data.split_column=fold",
        f"run.root={tmp_path / 'runs'}",
    ]
    assert main(["nlp", "prepare", *[a for s in sets for a in ("--set", s)]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown split value(s) 'holdout'" in err[0]


@pytest.mark.parametrize(
    "keys,message",
    [
        ({"columns": ["label", "body"]}, "must name each column once and include"),
        ({"encoding": "klingon"}, "unknown encoding"),
        ({"source": "generated", "path": ["a.csv", "b.csv"]}, "name one path"),
    ],
)
def test_bad_data_config_is_one_clear_error(keys, message):
    from shared.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        DataConfig(**{"source": "files", **keys}).validate()
