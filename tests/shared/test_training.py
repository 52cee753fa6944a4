import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from shared import training
from shared.config import TrainConfig
from shared.run import RunDir


def tiny_model():
    inputs = keras.Input((3,))
    model = keras.Model(
        inputs,
        keras.layers.Dense(1, activation="sigmoid")(
            keras.layers.Dense(4, activation="relu")(inputs)
        ),
    )
    model.compile(optimizer="adam", loss="binary_crossentropy")
    return model


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


class Crash(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt("killed")


def test_killed_fit_resumes_from_its_epoch(run_root, monkeypatch):
    config = TrainConfig(epochs=4, patience=0, verbose=0)
    run = RunDir.create("demo", {"x": 1}, str(run_root))
    original = training.make_callbacks
    monkeypatch.setattr(training, "make_callbacks", lambda *a, **k: original(*a, **k) + [Crash()])
    with pytest.raises(KeyboardInterrupt):
        training.fit(tiny_model(), data(), data(), run, config, name="net")
    monkeypatch.setattr(training, "make_callbacks", original)
    training.fit(tiny_model(), data(), data(), run, config, name="net")
    history = pd.read_csv(run.history_path)
    assert history["epoch"].tolist() == [0, 1, 2, 3]  # epochs 0-1 before the kill, 2-3 after
    assert (run.path / "checkpoints" / "net.final.weights.h5").exists()


def test_finished_network_is_loaded_not_retrained(run_root):
    config = TrainConfig(epochs=1, patience=0, verbose=0)
    run = RunDir.create("demo", {"x": 2}, str(run_root))
    trained = training.fit(tiny_model(), data(), None, run, config, name="net", monitor="loss")
    again = training.fit(tiny_model(), data(), None, run, config, name="net", monitor="loss")
    for a, b in zip(trained.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_schedule_warms_up_then_decays():
    schedule = training.learning_rate_schedule(
        TrainConfig(epochs=10, learning_rate=0.01, warmup_epochs=1.0, min_learning_rate_ratio=0.1),
        steps_per_epoch=10,
    )
    rates = [float(schedule(step)) for step in (0, 5, 10, 55, 100)]
    assert rates[0] < rates[1] < rates[2] == pytest.approx(0.01)
    assert rates[2] > rates[3] > rates[4] == pytest.approx(0.001, rel=1e-3)


def test_class_weights():
    y = np.array([0] * 90 + [1] * 10)
    assert training.class_weights(y, "none") is None
    balanced = training.class_weights(y, "balanced")
    assert balanced[1] / balanced[0] == pytest.approx(9.0)
    assert training.class_weights(y, "sqrt")[1] == pytest.approx(np.sqrt(balanced[1]))


def test_precision_policy_on_cpu():
    try:
        assert training.set_precision(True) == "mixed_bfloat16"
        assert keras.mixed_precision.global_policy().compute_dtype == "bfloat16"
    finally:
        assert training.set_precision(False) == "float32"


def test_float32_twin_computes_in_float32_with_the_same_weights():
    try:
        training.set_precision(True)
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(8, activation="relu")(inputs)
        outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32")(hidden)
        mixed = keras.Model(inputs, outputs)
    finally:
        training.set_precision(False)
    assert mixed.layers[1].compute_dtype == "bfloat16"
    twin = training.float32_twin(mixed)
    assert {layer.compute_dtype for layer in twin.layers[1:]} == {"float32"}
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    mixed_out, exact = mixed.predict(x, verbose=0), twin.predict(x, verbose=0)
    assert not np.array_equal(mixed_out, exact)  # bf16 rounding shows...
    np.testing.assert_allclose(mixed_out, exact, atol=0.02)  # ...within bf16's 3 digits


def test_xla_split_moves_string_lookups_into_the_input_pipeline():

    user = keras.Input((), dtype="string", name="user")
    item = keras.Input((), dtype="string", name="item")
    u = keras.layers.StringLookup(vocabulary=["a", "b"], name="user_lookup")(user)
    i = keras.layers.StringLookup(vocabulary=["x", "y"], name="item_lookup")(item)
    joined = keras.layers.Concatenate()(
        [keras.layers.Embedding(3, 2)(u), keras.layers.Embedding(3, 2)(i)]
    )
    model = keras.Model({"user": user, "item": item}, keras.layers.Dense(1)(joined))
    boundary = ["user_lookup", "item_lookup"]
    assert training.xla_split(model, TrainConfig(xla=False), boundary) == (None, model)
    head, core = training.xla_split(model, TrainConfig(xla=True), boundary)
    core.compile("sgd", "mse", jit_compile=True)
    assert core.jit_compile  # Keras would have turned XLA off for the whole model
    rows = {"user": tf.constant(["a", "b", "z"]), "item": tf.constant(["y", "x", "y"])}
    data = tf.data.Dataset.from_tensor_slices((rows, np.ones(3, "float32"))).batch(3)
    core.fit(training.through_head(head, data, training=True), verbose=0)
    # The core shares the model's weights: the whole model predicts what the core learned.
    ((inputs, _),) = training.through_head(head, data, training=False).take(1)
    np.testing.assert_allclose(
        core.predict(inputs, verbose=0), model.predict(rows, verbose=0), rtol=1e-5
    )


def test_float32_twin_keeps_an_adapted_vocabulary():
    vectorize = keras.layers.TextVectorization(max_tokens=10, output_sequence_length=3)
    vectorize.adapt(["good film", "bad film"])
    inputs = keras.Input((1,), dtype="string")
    model = keras.Model(inputs, vectorize(inputs))
    twin = training.float32_twin(model)
    assert twin.layers[1].get_vocabulary() == vectorize.get_vocabulary()
    texts = tf.constant([["good film"], ["unknown words"]])
    np.testing.assert_array_equal(twin.predict(texts, verbose=0), model.predict(texts, verbose=0))


def test_start_run_prepares_before_the_run_folder_exists(tmp_path):
    import dataclasses

    from shared.config import RunConfig
    from shared.io import DataError

    @dataclasses.dataclass
    class Config:
        train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
        run: RunConfig = dataclasses.field(default_factory=lambda: RunConfig(root=str(tmp_path)))

    def bad_data(config):
        raise DataError("no such file")

    with pytest.raises(DataError):
        training.start_run("demo", Config(), bad_data)
    assert not (tmp_path / "demo").exists()  # bad data leaves no empty run behind
    run, _, policy, data = training.start_run("demo", Config(), lambda config: "data")
    assert (data, policy) == ("data", "float32") and run.path.parent == tmp_path / "demo"
