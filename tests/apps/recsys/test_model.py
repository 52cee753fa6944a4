"""Custom layers and models: behaviour and save -> load round trips."""

import dataclasses

import keras
import numpy as np
import pytest

from apps.recsys.config import ModelConfig
from apps.recsys.model import (
    GlobalBias,
    InBatchSoftmax,
    ItemIndex,
    UserHistory,
    build_item_tower,
    build_mf,
    build_ncf,
    build_retrieval,
    build_two_tower_trainer,
    build_user_tower,
    history_weights,
    in_batch_softmax_loss,
)

USERS, ITEMS = ["u1", "u2", "u3"], ["a", "b", "c", "d"]
TINY = ModelConfig(mf_dim=3, ncf_dim=3, ncf_hidden=[4], tower_dim=4, tower_hidden=[4])


def _roundtrip(model, tmp_path):
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    return keras.saving.load_model(path, safe_mode=True)


def test_global_bias_roundtrip(tmp_path):
    inp = keras.Input((1,))
    model = keras.Model(inp, GlobalBias(3.5)(inp), name="gb")
    x = np.zeros((2, 1), np.float32)
    assert model.predict(x, verbose=0).tolist() == [[3.5], [3.5]]
    assert _roundtrip(model, tmp_path).predict(x, verbose=0).tolist() == [[3.5], [3.5]]


def test_in_batch_softmax_removes_accidental_hits_and_roundtrips(tmp_path):
    q = keras.Input((2,))
    c = keras.Input((2,))
    ids = keras.Input((), dtype="int32")
    model = keras.Model([q, c, ids], InBatchSoftmax(0.5)(q, c, ids), name="ibs")
    queries = np.eye(3, 2, dtype=np.float32)
    # rows 0 and 2 share item 7: row 0's logit for candidate 2 (and vice versa) is removed.
    item_ids = np.array([7, 8, 7], np.int32)
    logits = model.predict([queries, queries, item_ids], verbose=0)
    assert logits[0, 0] == pytest.approx(2.0)
    assert logits[0, 2] < -1e6 and logits[2, 0] < -1e6
    assert logits[0, 1] == pytest.approx(0.0)
    assert logits[1, 1] == pytest.approx(2.0) and logits[1, 0] > -1e6  # no hit in row 1
    again = _roundtrip(model, tmp_path).predict([queries, queries, item_ids], verbose=0)
    np.testing.assert_allclose(again, logits)
    loss = np.asarray(in_batch_softmax_loss(None, keras.ops.convert_to_tensor(logits)))
    assert loss.shape == (3,) and np.all(loss > 0)
    with pytest.raises(ValueError, match="temperature=0"):
        InBatchSoftmax(0)


def test_item_index_roundtrip_keeps_candidates(tmp_path):
    inp = keras.Input((2,))
    index = ItemIndex(3, 2, k=2, name="index")
    index.update_candidates(
        keras.ops.convert_to_tensor(np.array([[1, 0], [0, 1], [1, 1]], "float32"))
    )
    scores, rows = index(inp)
    model = keras.Model(inp, {"scores": scores, "items": rows}, name="idx")
    query = np.array([[1.0, 0.2]], np.float32)
    out = model.predict(query, verbose=0)
    assert out["items"].tolist() == [[2, 0]]
    loaded = _roundtrip(model, tmp_path).predict(query, verbose=0)
    assert loaded["items"].tolist() == [[2, 0]]
    np.testing.assert_allclose(loaded["scores"], out["scores"])
    with pytest.raises(ValueError, match="num_candidates=0"):
        ItemIndex(0, 2)


@pytest.mark.parametrize("builder", [build_mf, build_ncf])
def test_rating_models_take_raw_ids_and_roundtrip(builder, tmp_path):
    model = builder(USERS, ITEMS, TINY, mean=3.0)
    x = {"user": np.array(["u1", "nobody"]), "item": np.array(["a", "d"])}
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(x).batch(2)
    before = model.predict(ds, verbose=0)
    assert before.shape == (2, 1)
    np.testing.assert_allclose(
        _roundtrip(model, tmp_path).predict(ds, verbose=0), before, rtol=1e-6
    )


def test_two_tower_and_retrieval_roundtrip(tmp_path):
    import tensorflow as tf

    keras.utils.set_random_seed(0)

    users_t = build_user_tower(USERS, TINY)
    items_t = build_item_tower(ITEMS, 2, TINY)
    trainer = build_two_tower_trainer(USERS, ITEMS, users_t, items_t, TINY)
    batch = {
        "user": np.array(["u1", "u2"]),
        "item": np.array(["a", "b"]),
        "genres": np.eye(2, dtype=np.float32),
        "item_index": np.array([0, 1], np.int32),
        "item_probability": np.array([0.5, 0.25], np.float32),
    }
    logits = trainer.predict(tf.data.Dataset.from_tensor_slices(batch).batch(2), verbose=0)
    assert logits.shape == (2, 2)
    emb = items_t.predict(
        tf.data.Dataset.from_tensor_slices(
            {"item": np.array(ITEMS), "genres": np.zeros((4, 2), "float32")}
        ).batch(4),
        verbose=0,
    )
    retrieval = build_retrieval(users_t, emb, k=3)
    users = tf.data.Dataset.from_tensor_slices(np.array(USERS)).batch(3)
    out = retrieval.predict(users, verbose=0)
    direct = users_t.predict(users, verbose=0) @ emb.T
    # The index returns the 3 best items with their dot products (compared by value: an untrained
    # tower can leave near-ties whose order differs between NumPy and TensorFlow).
    np.testing.assert_allclose(out["scores"], -np.sort(-direct, axis=1)[:, :3], atol=1e-5)
    np.testing.assert_allclose(
        np.take_along_axis(direct, out["items"], axis=1), out["scores"], atol=1e-5
    )
    loaded = _roundtrip(retrieval, tmp_path).predict(users, verbose=0)
    assert loaded["items"].tolist() == out["items"].tolist()
    np.testing.assert_allclose(loaded["scores"], out["scores"], rtol=1e-6)


def test_user_history_keeps_each_users_latest_items_at_unit_weight(tmp_path):
    layer = UserHistory(n_users=3, n_items=5, length=2, dim=4)
    layer.build(None)
    # user 1: items 1, 2, 3 in time order (3 latest); user 2: item 4 only; user 0: none.
    users, items = np.array([1, 1, 1, 2]), np.array([1, 2, 3, 4])
    layer.set_history(users, items, history_weights(users, np.array([10, 20, 30, 5]), 0.0))
    kept = np.asarray(layer.history_items)
    assert kept[1].tolist() == [3, 2] and kept[2].tolist() == [4, 0] and kept[0].tolist() == [0, 0]
    weights = np.asarray(layer.history_weights)
    np.testing.assert_allclose(np.linalg.norm(weights, axis=1), [0.0, 1.0, 1.0], atol=1e-6)
    y = np.asarray(layer.factors)
    out = np.asarray(layer(np.array([1, 2, 0])))
    np.testing.assert_allclose(out[0], weights[1, 0] * y[3] + weights[1, 1] * y[2], rtol=1e-5)
    np.testing.assert_allclose(out[1], y[4], rtol=1e-5)
    assert np.all(out[2] == 0)


def test_history_weights_halve_every_half_life_and_are_flat_without_times():
    users = np.array(["a", "a", "a", "b"])
    weights = history_weights(users, np.array([3, 1, 2, 9]), half_life=1.0)
    np.testing.assert_allclose(weights, [1.0, 0.25, 0.5, 1.0])
    assert history_weights(users, None, 1.0).tolist() == [1.0] * 4


def test_user_tower_reads_the_history_from_a_bare_id_and_roundtrips(tmp_path):
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    history = (np.array(["u1", "u2", "u2"]), np.array(["a", "b", "c"]), None)
    tower = build_user_tower(USERS, dataclasses.replace(TINY, user_history=True), history, ITEMS)
    core = tower.get_layer("user_core")
    assert core.get_layer("user_history").length == 2
    # Same id embedding, different histories: zeroing the id table leaves only the history.
    table = core.get_layer("user_id_embedding")
    table.set_weights([np.zeros_like(table.get_weights()[0])])
    ids = tf.constant(USERS)
    out = tower.predict(ids, verbose=0)
    assert not np.allclose(out[0], out[1])
    again = _roundtrip(tower, tmp_path).predict(ids, verbose=0)
    np.testing.assert_allclose(again, out, rtol=1e-6)
    plain = build_user_tower(USERS, dataclasses.replace(TINY, user_history=False), history, ITEMS)
    assert "user_history" not in [layer.name for layer in plain.get_layer("user_core").layers]
