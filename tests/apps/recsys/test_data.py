"""Readers on small files written in each real layout, their bad input, the split leak checks."""

import numpy as np
import pandas as pd
import pytest

from apps.recsys import data
from apps.recsys.config import ModelConfig
from shared.io import DataError


def test_u_data_tab_separated(tmp_path):
    path = tmp_path / "u.data"
    path.write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n", encoding="latin-1")
    frame = data.read_movielens_ratings(path)
    assert frame.columns.tolist() == data.COLUMNS
    assert frame["user"].tolist() == ["196", "186"]
    assert frame["item"].tolist() == ["242", "302"]
    assert frame["rating"].tolist() == [3.0, 3.0]
    assert frame["timestamp"].tolist() == [881250949, 891717742]


def test_ratings_dat_double_colon(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_text("1::1193::5::978300760\n1::661::3::978302109\n", encoding="latin-1")
    frame = data.read_movielens_ratings(path)
    assert frame["item"].tolist() == ["1193", "661"]
    assert frame["rating"].tolist() == [5.0, 3.0]


def test_ratings_csv_with_header_and_half_stars(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,3.5,964981247\n")
    frame = data.read_movielens_ratings(path)
    assert frame["rating"].tolist() == [4.0, 3.5]
    assert frame["user"].tolist() == ["1", "1"]


def test_u_item_latin1_titles_and_genre_flags(tmp_path):
    path = tmp_path / "u.item"
    flags = ["0"] * 19
    flags[3] = flags[5] = "1"  # Animation, Comedy
    line = "|".join(["1", "Café Society (1995)", "01-Jan-1995", "", "http://x"] + flags)
    path.write_bytes((line + "\n").encode("latin-1"))
    items = data.read_movielens_items(path)
    assert items.loc[0, "title"] == "Café Society (1995)"
    assert items.loc[0, "genres"] == "Animation|Comedy"


def test_movies_dat_and_csv(tmp_path):
    dat = tmp_path / "movies.dat"
    dat.write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Señor (1990)::Drama\n".encode(
            "latin-1"
        )
    )
    items = data.read_movielens_items(dat)
    assert items["title"].tolist() == ["Toy Story (1995)", "Señor (1990)"]
    assert items.loc[0, "genres"] == "Animation|Children's|Comedy"
    csv = tmp_path / "movies.csv"
    csv.write_text(
        'movieId,title,genres\n1,"Toy Story, The (1995)",Adventure|Animation\n'
        "2,X,(no genres listed)\n"
    )
    items = data.read_movielens_items(csv)
    assert items.loc[0, "title"] == "Toy Story, The (1995)"
    assert items.loc[1, "genres"] == ""


def test_ml100k_base_and_test_pair_is_read_as_published(tmp_path):
    # u1.base / u1.test: tab-separated `user item rating timestamp`, no header, LF.
    (tmp_path / "u1.base").write_text("1\t1\t5\t874965758\n1\t2\t3\t876893171\n")
    (tmp_path / "u1.test").write_text("1\t6\t5\t887431973\n2\t1\t4\t888550871\n")
    base = data.read_movielens_ratings(tmp_path / "u1.base")
    test = data.read_movielens_ratings(tmp_path / "u1.test")
    assert base["item"].tolist() == ["1", "2"] and test["user"].tolist() == ["1", "2"]
    assert test["timestamp"].tolist() == [887431973, 888550871]


def test_hetrec_user_artists_dat_tab_header_and_crlf(tmp_path):
    # HetRec 2011 Last.fm: tab-separated, a header, CRLF line ends, weight = play count.
    path = tmp_path / "user_artists.dat"
    path.write_bytes(b"userID\tartistID\tweight\r\n2\t51\t13883\r\n2\t52\t11690\r\n3\t51\t7\r\n")
    frame = data.read_interactions(path, "userID", "artistID", None, None)
    assert frame["user"].tolist() == ["2", "2", "3"]
    assert frame["item"].tolist() == ["51", "52", "51"]
    assert frame["rating"].isna().all() and (frame["timestamp"] == 0).all()
    weights = data.read_interactions(path, "userID", "artistID", "weight", None)
    assert weights["rating"].tolist() == [13883.0, 11690.0, 7.0]  # no stray \r in the last field


def test_hetrec_artists_dat_keeps_quotes_as_text(tmp_path):
    path = tmp_path / "artists.dat"
    path.write_text(
        "id\tname\turl\tpictureURL\n1\tMALICE MIZER\thttp://x\thttp://y\n"
        '1686\t"Weird Al" Yankovic\thttp://z\t\n'
    )
    items = data.read_items(path, "id", "name", None)
    assert items["title"].tolist() == ["MALICE MIZER", '"Weird Al" Yankovic']


@pytest.mark.parametrize(
    "name, text, separator",
    [
        ("events.dat", "u::i::r\n1::2::3\n", None),
        ("events.txt", "u;i;r\n1;2;3\n", None),
        ("events.log", "u|i|r\n1|2|3\n", None),
        ("events.dat", "u i r\n1 2 3\n", " "),
        ("events.dat", "u\ti\tr\n1\t2\t3\n", "\\t"),
    ],
)
def test_generic_separators_read_off_the_header_or_set(tmp_path, name, text, separator):
    path = tmp_path / name
    path.write_text(text)
    frame = data.read_interactions(path, "u", "i", "r", None, separator)
    assert frame[["user", "item"]].values.tolist() == [["1", "2"]]
    assert frame["rating"].tolist() == [3.0]


def test_split_column_names_each_rows_split(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("u,i,part\n1,a,train\n1,b,dev\n2,a, Test\n2,b,validation\n")
    frame = data.read_interactions(path, "u", "i", None, None, split_column="part")
    assert frame["given"].tolist() == ["train", "val", "test", "val"]
    as_test = data.read_interactions(
        path, "u", "i", None, None, split_column="part", dev_split="test"
    )
    assert as_test["given"].tolist() == ["train", "test", "test", "val"]


def test_generic_reader_bad_input_is_one_line(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("u,i,part\n1,a,train\n1,b,holdout\n")
    with pytest.raises(DataError, match="unknown split value.*'holdout'"):
        data.read_interactions(path, "u", "i", None, None, split_column="part")
    with pytest.raises(DataError, match="missing column.*nope"):
        data.read_interactions(path, "u", "i", None, None, split_column="nope")
    odd = tmp_path / "events.dat"
    odd.write_text("user item\n1 2\n")
    with pytest.raises(DataError, match="set data.separator"):
        data.read_interactions(odd, "user", "item", None, None)
    ragged = tmp_path / "ragged.dat"
    ragged.write_text("u\ti\n1\t2\n1\t2\t3\t4\n")
    with pytest.raises(DataError, match="malformed"):
        data.read_interactions(ragged, "u", "i", None, None)
    short = tmp_path / "short.dat"
    short.write_text("u\ti\tw\n1\t2\t3\n4\n")
    with pytest.raises(DataError, match="line 3: 1 fields, expected 3"):
        data.read_interactions(short, "u", "i", None, None)


def test_generic_csv_parquet_and_dates(tmp_path):
    frame = pd.DataFrame(
        {"customer": ["a", "b"], "product": [10, 11], "when": ["2024-01-01", "2024-01-02"]}
    )
    frame.to_parquet(tmp_path / "events.parquet")
    out = data.read_interactions(tmp_path / "events.parquet", "customer", "product", None, "when")
    assert out["item"].tolist() == ["10", "11"]
    assert out["rating"].isna().all()
    assert out["timestamp"].tolist() == [1704067200, 1704153600]
    frame.to_csv(tmp_path / "events.csv", index=False)
    out = data.read_interactions(tmp_path / "events.csv", "customer", "product", None, None)
    assert out["timestamp"].tolist() == [0, 0]
    items = tmp_path / "items.csv"
    items.write_text("product,name\n10,Lamp\n")
    assert data.read_items(items, "product", "name", None)["title"].tolist() == ["Lamp"]


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("u.data", "1\t2\t3\n", "expected 4"),
        ("ratings.dat", "1:2:3:4\n", "separated by '::'"),
        ("u.data", "1\t2\tfive\t100\n", "rating is not a number"),
        ("ratings.csv", "user,item\n1,2\n", "missing column"),
        ("u.data", "", "empty"),
        ("u.data", "1\t2\t3\tyesterday-ish\n", "timestamp"),
    ],
)
def test_rating_readers_reject_bad_input(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        data.read_movielens_ratings(path)


def test_item_and_generic_readers_reject_bad_input(tmp_path):
    bad_item = tmp_path / "u.item"
    bad_item.write_text("1|Title|date\n")
    with pytest.raises(DataError, match="expected 24"):
        data.read_movielens_items(bad_item)
    generic = tmp_path / "events.csv"
    generic.write_text("u,i\n1,\n")
    with pytest.raises(DataError, match="missing column"):
        data.read_interactions(generic, "user", "item", None, None)
    with pytest.raises(DataError, match="missing item id"):
        data.read_interactions(generic, "u", "i", None, None)
    with pytest.raises(DataError, match="missing item column"):
        data.read_items(generic, "i", "title", None)
    with pytest.raises(DataError, match="no such file"):
        data.read_movielens_ratings(tmp_path / "nope.data")
    with pytest.raises(DataError, match="no u.data"):
        data.find_movielens(tmp_path)


def _frame(n_users=20, per_user=8, seed=0):
    rng = np.random.default_rng(seed)
    rows = [
        (str(u), str(i), float(rng.integers(1, 6)), int(rng.integers(0, 10**6)))
        for u in range(n_users)
        for i in rng.choice(50, per_user, replace=False)
    ]
    return pd.DataFrame(rows, columns=data.COLUMNS)


def test_random_split_is_seeded_and_leak_free():
    frame = _frame()
    a = data.random_split(len(frame), 0.1, 0.2, seed=3)
    assert (a == data.random_split(len(frame), 0.1, 0.2, seed=3)).all()
    assert (a != data.random_split(len(frame), 0.1, 0.2, seed=4)).any()
    assert (a == "test").sum() == round(0.2 * len(frame))
    data.check_no_leak(frame.assign(split=a), "split", temporal=False)


def test_leave_last_out_holds_out_each_users_latest():
    frame = _frame()
    split = data.per_user_holdout(frame, k=2, min_interactions=5, order="time", seed=0)
    frame = frame.assign(split=split)
    data.check_no_leak(frame, "split", temporal=True)
    for _, rows in frame.groupby("user"):
        ordered = rows.sort_values("timestamp")["split"].tolist()
        assert ordered[-2:] == ["test", "test"] and ordered[-4:-2] == ["val", "val"]
    short = pd.DataFrame(
        {"user": ["x"] * 3, "item": list("abc"), "rating": 1.0, "timestamp": [1, 2, 3]}
    )
    assert (data.per_user_holdout(short, 2, 1, "time", 0) == "train").all()


def test_random_holdout_without_timestamps_is_seeded_per_user_and_not_the_file_order():
    # HetRec user_artists.dat lists each user's artists by id with no time: the last rows in
    # the file are the highest ids, so a leave-last-out split would hold out a biased set.
    frame = _frame(n_users=30, per_user=10).assign(timestamp=0)
    frame = frame.sort_values(["user", "item"], ignore_index=True)
    split = data.per_user_holdout(frame, k=2, min_interactions=5, order="random", seed=7)
    again = data.per_user_holdout(frame, k=2, min_interactions=5, order="random", seed=7)
    other = data.per_user_holdout(frame, k=2, min_interactions=5, order="random", seed=8)
    assert (split == again).all() and (split != other).any()
    counts = frame.assign(split=split).groupby("user")["split"].value_counts().unstack()
    assert (counts["test"] == 2).all() and (counts["val"] == 2).all()
    assert (counts["train"] == 6).all()
    last_rows = frame.groupby("user").tail(2).index
    assert not (split[last_rows] == "test").all()


def test_holdout_of_one_set_for_a_given_test_file():
    frame = _frame(n_users=4, per_user=3)
    split = data.per_user_holdout(
        frame, k=1, min_interactions=1, order="time", seed=0, held=("val",)
    )
    assert sorted(set(split)) == ["train", "val"]
    assert (pd.Series(split).groupby(frame["user"]).apply(lambda s: (s == "val").sum()) == 1).all()


def test_leak_checks_catch_leaks():
    frame = pd.DataFrame({"user": ["a", "a", "a"], "item": ["x", "y", "x"], "timestamp": [5, 1, 6]})
    with pytest.raises(DataError, match="two splits"):
        data.check_no_leak(frame.assign(s=["train", "test", "test"]), "s", temporal=False)
    late = frame.iloc[:2].assign(s=["train", "test"])  # the training row is newer than the test row
    with pytest.raises(DataError, match="after held-out"):
        data.check_no_leak(late, "s", temporal=True)


def test_deduplicate_keeps_latest_and_reports_the_rest():
    frame = pd.DataFrame(
        {
            "user": ["a", "a", "b"],
            "item": ["x", "x", "x"],
            "rating": [1.0, 5.0, 3.0],
            "timestamp": [1, 9, 2],
        }
    )
    kept, rejects = data.deduplicate(frame)
    assert sorted(kept["rating"].tolist()) == [3.0, 5.0]
    assert len(rejects) == 1 and rejects["rating"].item() == 1.0
    assert "repeated" in rejects["reason"].item()


def test_genre_matrix():
    vocab = ["Comedy", "Drama"]
    m = data.genre_matrix(pd.Series(["Drama", "Comedy|Drama", "", "Horror"]), vocab)
    assert m.tolist() == [[0, 1], [1, 1], [0, 0], [0, 0]]


def test_movielens_tags_join_the_genres_as_item_features(tmp_path):
    path = tmp_path / "tags.csv"
    path.write_text(
        "userId,movieId,tag,timestamp\n"
        "1,10,Dark Comedy,1\n2,10, dark comedy ,2\n1,20,dark comedy,3\n"
        "1,20,one|off,4\n3,30,funny,5\n4,31,funny,6\n5,10,rare,7\n"
    )
    tags = data.read_tags(path, "item_id", min_items=2)
    # "rare" and "one|off" are on one movie each; repeats and case collapse.
    assert tags.to_dict() == {
        "10": "dark comedy",
        "20": "dark comedy",
        "30": "funny",
        "31": "funny",
    }
    items = pd.DataFrame({"item": ["10", "20"], "title": ["A", "B"], "genres": ["Drama", ""]})
    joined = data.with_tags(items, tags)
    assert joined["item"].tolist() == ["10", "20", "30", "31"]  # tagged, no metadata: added
    assert data.item_feature_text(joined).tolist() == [
        "Drama|tag:dark comedy",
        "tag:dark comedy",
        "tag:funny",
        "tag:funny",
    ]
    assert data.genre_vocabulary(joined) == ["Drama", "tag:dark comedy", "tag:funny"]
    train = pd.DataFrame({"user": ["u"], "item": ["10"], "rating": [4.0], "timestamp": [0]})
    no_tags = data.TowerInputs(joined, ["10"], train, ModelConfig(item_tags=False))
    assert no_tags.genres == ["Drama"]
    with_tag_features = data.TowerInputs(joined, ["10"], train, ModelConfig())
    assert with_tag_features.genre_rows(np.array(["30", "99"])).tolist() == [[0, 0, 1], [0, 0, 0]]
    (tmp_path / "bad.csv").write_text("movieId,label\n1,x\n")
    with pytest.raises(DataError, match="needs columns movieId and tag"):
        data.read_tags(tmp_path / "bad.csv", "item_id", 1)
