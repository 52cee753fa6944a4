"""Text readers on small files written in the public layouts; labels, splits, bad input."""

import json

import numpy as np
import pytest

from apps.nlp.text import data as tdata
from apps.nlp.text.generate import generate_reviews
from shared.io import DataError


def read(path, fmt="auto", delimiter="", text="text", label="label"):
    return tdata.read(path, fmt, text, label, "split", delimiter, 0.2, 0.2, seed=0)


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
    data = read(path)
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
