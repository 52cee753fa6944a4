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


def test_weight_decay_shrinks_kernels_but_not_biases_or_normalisation():
    inputs = keras.Input((3,))
    hidden = keras.layers.BatchNormalization()(keras.layers.Dense(4)(inputs))
    model = keras.Model(inputs, hidden)
    config = TrainConfig(learning_rate=0.1, weight_decay=0.5, warmup_epochs=0.0)  # 0.1 at step 0
    optimizer = training.make_optimizer(config, steps_per_epoch=1, model=model)
    before = [v.numpy().copy() for v in model.trainable_variables]
    # Zero gradients leave Adam's own update at zero: what moves is the decay alone.
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables])
    for variable, old in zip(model.trainable_variables, before, strict=True):
        if len(variable.shape) == 2:  # the kernel: w <- w - lr * wd * w
            np.testing.assert_allclose(variable.numpy(), old * (1 - 0.1 * 0.5), rtol=1e-6)
        else:  # the Dense bias, the batch norm's gamma and beta
            np.testing.assert_array_equal(variable.numpy(), old)
    assert training.make_optimizer(TrainConfig(weight_decay=0.0), 1, model).weight_decay is None
    assert type(training.make_optimizer(TrainConfig(weight_decay=0.0), 1)) is keras.optimizers.Adam


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


def regression_data(scale: float = 1.0):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5]) * scale).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def regression_model():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Dense(8)(hidden)))
    return model


def test_a_learning_rate_of_1e3_diverges_and_is_recorded_as_failed(run_root, capsys):
    config = TrainConfig(epochs=5, patience=0, verbose=0, learning_rate=1e3, warmup_epochs=0)
    run = RunDir.create("demo", {"x": 3}, str(run_root))
    model = regression_model()
    training.compile_model(model, config, 64, "mean_squared_error")
    with pytest.raises(training.Diverged) as caught:
        training.fit(model, regression_data(), regression_data(), run, config, name="net")
    assert caught.value.network == "net" and caught.value.epoch >= 1
    assert "net diverged:" in capsys.readouterr().out
    summary = training.fit_summary(run, "net")
    assert summary["status"] == "failed" and summary["epoch"] == caught.value.epoch
    assert not (run.path / "checkpoints" / "net.final.weights.h5").exists()
    with pytest.raises(training.Diverged):  # a resumed run does not train it again
        training.fit(regression_model(), regression_data(), None, run, config, name="net")


def test_a_nan_loss_stops_training_after_that_epoch(run_root):
    config = TrainConfig(epochs=6, patience=0, verbose=0)
    run = RunDir.create("demo", {"x": 4}, str(run_root))
    x = np.ones((32, 3), "float32")
    y = np.full(32, np.nan, "float32")
    model = regression_model()
    training.compile_model(model, config, 32, "mean_squared_error")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    with pytest.raises(training.Diverged, match="non-finite loss"):
        training.fit(model, dataset, None, run, config, name="net", monitor="loss")
    assert len(pd.read_csv(run.path / "history-net.csv")) == 1


def test_a_healthy_fit_is_recorded_ok_with_its_seconds(run_root):
    config = TrainConfig(epochs=2, patience=0, verbose=0)
    run = RunDir.create("demo", {"x": 5}, str(run_root))
    training.fit(tiny_model(), data(), data(), run, config, name="net")
    summary = training.fit_summary(run, "net")
    assert summary["status"] == "ok" and summary["seconds"] > 0


def test_time_budget_stops_after_the_epoch_that_passes_it(run_root, monkeypatch):
    clock = iter(range(0, 10_000, 50))  # every reading is 50 s after the previous one
    monkeypatch.setattr(training.time, "perf_counter", lambda: float(next(clock)))
    config = TrainConfig(epochs=20, patience=0, verbose=0, max_minutes=2.0)
    run = RunDir.create("demo", {"x": 6}, str(run_root))
    training.fit(tiny_model(), data(), data(), run, config, name="net")
    epochs = len(pd.read_csv(run.path / "history-net.csv"))
    # Every epoch reads the clock at least once (50 s a reading), so 120 s pass by epoch 3.
    assert 1 <= epochs <= 3
    assert training.fit_summary(run, "net")["stopped_by_time_budget_at_epoch"] == epochs


def test_epoch_score_adds_its_column_to_the_history(run_root):
    config = TrainConfig(epochs=2, patience=0, verbose=0)
    run = RunDir.create("demo", {"x": 7}, str(run_root))
    calls = []
    score = training.EpochScore("custom", lambda model: calls.append(model) or 0.25)
    training.fit(tiny_model(), data(), data(), run, config, name="net", scores=[score])
    history = pd.read_csv(run.path / "history-net.csv")
    assert history["val_custom"].tolist() == [0.25, 0.25] and len(calls) == 2


@pytest.mark.parametrize(
    ("scores", "mode", "best"),
    [
        ({"a": float("nan"), "b": 0.5, "c": 0.7}, "min", "b"),
        ({"c": 0.7, "b": 0.5, "a": float("nan")}, "min", "b"),
        ({"a": float("inf"), "b": 0.5}, "min", "b"),
        ({"a": 0.9, "b": float("nan")}, "max", "a"),
        ({"a": float("nan"), "b": None}, "min", None),
    ],
)
def test_best_network_ignores_non_finite_scores_in_any_order(scores, mode, best):
    assert training.best_network(scores, mode) == best


def test_fail_run_records_the_failure_and_never_finishes(run_root):
    run = RunDir.create("demo", {"x": 8}, str(run_root))
    with pytest.raises(training.TrainingFailed, match="every network failed"):
        training.fail_run(run, "Demo", {"net": "diverged at epoch 1"})
    metrics = __import__("json").loads(run.metrics_path.read_text())
    assert metrics == {"status": "failed", "failed_networks": {"net": "diverged at epoch 1"}}
    assert "diverged at epoch 1" in run.card_path.read_text()
    assert not (run.path / "FINISHED").exists() and not (run_root / "demo" / "latest").exists()


def test_a_diverged_network_gets_its_one_line_not_a_traceback_from_an_epoch_score(run_root):
    def strict(model):
        raise AssertionError("scored a model the guard had stopped")

    config = TrainConfig(epochs=3, patience=0, verbose=0)
    run = RunDir.create("demo", {"x": 9}, str(run_root))
    x, y = np.ones((32, 3), "float32"), np.full(32, np.nan, "float32")
    model = regression_model()
    training.compile_model(model, config, 32, "mean_squared_error")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    scores = [training.EpochScore("strict", strict)]
    with pytest.raises(training.Diverged):
        training.fit(model, dataset, None, run, config, "net", monitor="loss", scores=scores)


def test_one_cycle_rises_from_a_25th_to_the_peak_then_anneals_and_deserialises():
    config = training.ScheduledTrainConfig(
        epochs=10, learning_rate=0.01, schedule="one_cycle", one_cycle_warmup=0.3
    )
    schedule = training.learning_rate_schedule(config, steps_per_epoch=10)
    rates = [float(schedule(step)) for step in (0, 15, 30, 65, 100)]
    assert rates[0] == pytest.approx(0.01 / 25)
    assert rates[0] < rates[1] < rates[2] == pytest.approx(0.01)
    assert rates[2] > rates[3] > rates[4] == pytest.approx(0.01 / 1e4, rel=1e-3)
    # Keras's own class: a saved optimizer loads where only keras is imported.
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert float(again(65)) == pytest.approx(rates[3])


def test_a_plain_train_config_keeps_the_warm_up_cosine_and_every_callback(run_root):
    run = RunDir.create("demo", {"x": 3}, str(run_root))
    plain = training.make_callbacks(run, TrainConfig(), "net", "val_loss", "min")
    kinds = {type(c).__name__ for c in plain}
    assert {"EveryEpochs", "ModelCheckpoint", "TensorBoard", "CSVLogger"} <= kinds
    assert isinstance(
        training.learning_rate_schedule(TrainConfig(), 10),
        keras.optimizers.schedules.CosineDecay,
    )
    lean = training.ScheduledTrainConfig(backup_every=0, checkpoint_best=False, tensorboard=False)
    kinds = {type(c).__name__ for c in training.make_callbacks(run, lean, "net", "loss", "min")}
    assert kinds == {"CSVLogger", "EarlyStopping"}


def test_backup_every_two_epochs_resumes_from_the_last_save(run_root, monkeypatch):
    config = training.ScheduledTrainConfig(epochs=5, patience=0, verbose=0, backup_every=2)
    run = RunDir.create("demo", {"x": 4}, str(run_root))

    class CrashAtThree(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt("killed")

    original = training.make_callbacks
    monkeypatch.setattr(
        training, "make_callbacks", lambda *a, **k: original(*a, **k) + [CrashAtThree()]
    )
    with pytest.raises(KeyboardInterrupt):
        training.fit(tiny_model(), data(), data(), run, config, name="net")
    monkeypatch.setattr(training, "make_callbacks", original)
    training.fit(tiny_model(), data(), data(), run, config, name="net")
    epochs = pd.read_csv(run.history_path)["epoch"].tolist()
    # Saved after epochs 2 (index 1); epoch index 2 ran, was lost with the kill, and ran again.
    assert epochs == [0, 1, 2, 2, 3, 4]


def _labelled_batches(n=12, batch=4, n_classes=3):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 5, 5, 3)).astype(np.uint8)
    y = (np.arange(n) % n_classes).astype(np.int64)
    return x, y, tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def test_soft_targets_without_mixup_are_one_hot_and_images_untouched():
    x, y, dataset = _labelled_batches()
    images, targets = zip(*training.soft_targets(dataset, 3), strict=True)
    np.testing.assert_array_equal(np.concatenate(images), x)
    np.testing.assert_array_equal(np.concatenate(targets), np.eye(3)[y])


def _blend_of_two_rows(image, target, batch_x, batch_t) -> bool:
    """Whether (image, target) is w * row i + (1 - w) * row j of the batch for one w."""
    for i in range(len(batch_x)):
        for j in range(len(batch_x)):
            diff = batch_x[i] - batch_x[j]
            w = 1.0 if i == j else float(np.sum((image - batch_x[j]) * diff) / np.sum(diff**2))
            if not -1e-6 <= w <= 1 + 1e-6:
                continue
            blend_x = w * batch_x[i] + (1 - w) * batch_x[j]
            blend_t = w * batch_t[i] + (1 - w) * batch_t[j]
            # uint8 rounding moves each pixel by half a grey level; w is a least-squares fit
            if np.abs(blend_x - image).max() <= 1.0 and np.allclose(blend_t, target, atol=0.02):
                return True
    return False


def test_mixup_blends_images_and_targets_with_the_same_weight():
    x, y, dataset = _labelled_batches()
    mixed = training.soft_targets(dataset, 3, mixup=0.4, seed=7)
    assert mixed.cardinality().numpy() == 3
    blended = 0
    for (images, targets), start in zip(mixed, range(0, 12, 4), strict=True):
        images, targets = images.numpy(), targets.numpy()
        assert images.dtype == np.uint8 and images.shape == (4, 5, 5, 3)
        np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-6)
        batch_x = x[start : start + 4].astype(np.float64)
        batch_t = np.eye(3)[y[start : start + 4]]
        for image, target in zip(images.astype(np.float64), targets, strict=True):
            assert _blend_of_two_rows(image, target, batch_x, batch_t)
            blended += not np.isclose(target.max(), 1.0)
    assert blended > 0  # some targets are soft


def test_mixup_is_reproducible_from_its_seed_and_redrawn_each_epoch():
    _, _, dataset = _labelled_batches()

    def epochs(seed):
        mixed = training.soft_targets(dataset, 3, mixup=0.4, seed=seed)
        return [np.concatenate([t.numpy() for _, t in mixed]) for _ in range(2)]

    first, again = epochs(3), epochs(3)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.allclose(first[0], first[1])  # a new blend every epoch


def test_mixup_keeps_multi_hot_targets_and_rejects_a_negative_alpha():
    x = np.zeros((4, 2, 2, 1), np.float32)
    y = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    _, targets = next(iter(training.soft_targets(dataset, 2, multilabel=True)))
    np.testing.assert_array_equal(targets.numpy(), y)
    _, mixed = next(iter(training.soft_targets(dataset, 2, 0.4, multilabel=True)))
    assert ((mixed.numpy() >= 0) & (mixed.numpy() <= 1)).all()
    with pytest.raises(ValueError, match="mixup"):
        training.soft_targets(dataset, 2, mixup=-1.0)
