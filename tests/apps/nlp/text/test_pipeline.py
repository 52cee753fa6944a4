"""The text app end to end on a tiny config, through the command line a user types."""

import json
import types

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from apps.nlp.text import data as tdata
from apps.nlp.text.config import Config, TextTrainConfig
from apps.nlp.text.model import VECTORIZE, Meta, load_model, predict_texts, uses_keras_hub
from apps.nlp.text.pipeline import best_epoch, network_minutes, refits
from apps.nlp.text.scorer import TextScorer
from shared.run import RunDir
from shared.training import float32_twin
from tests.apps.nlp.text.conftest import SMOKE, cli, tiny_frame, tiny_sets
from tests.apps.nlp.text.test_model import make_tiny_bert_preset


def score_input(folder):
    """A scoring file with an empty, a whitespace-only, a missing and a very long text."""
    frame = tiny_frame(10, seed=5)[["id", "text"]]
    extra = pd.DataFrame(
        {"id": ["empty", "blank", "long"], "text": ["", "  \t ", "the film was great " * 40]}
    )
    path = folder / "to_score.csv"
    pd.concat([frame, extra]).to_csv(path, index=False)
    return path


def test_run_keeps_every_network_its_meta_and_metrics_beside_the_baseline(trained):
    root, _ = trained
    run = root / "runs" / "nlp" / "latest"
    meta = Meta.read(RunDir(run))
    other = next(n for n in meta.networks if n != meta.best)
    for name in [
        "model.keras",
        "most_confidently_wrong.csv",
        "plots/confusion_matrix.png",
        f"plots/confusion_matrix_{other}.png",
        "plots/history.png",
        "models/cnn.keras",
        "models/transformer.keras",
        "models/blend.keras",
        "models/tfidf_keras.keras",
        "models/tfidf_chars.keras",
    ]:
        assert (run / name).is_file(), name
    assert meta.networks == ["cnn", "transformer"] and meta.best in [*meta.networks, "blend"]
    assert meta.class_names == ["neg", "pos"] and not meta.multi_label
    assert meta.failed_networks == {} and meta.sequence_length == 16
    assert set(meta.validation_loss) == set(meta.network_seconds) == set(meta.networks)
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["networks"]) == {"cnn", "transformer"}
    weights = metrics["blend"]["of"]["weights"]
    assert set(weights) == {*meta.networks, "tfidf_keras", "tfidf_chars"}
    for entry in [*metrics["networks"].values(), metrics["baseline"], metrics["blend"]]:
        test = entry["test"]
        assert 0 <= test["accuracy"] <= 1 and set(test["per_class"]) == {"neg", "pos"}
    assert metrics["baseline"]["test"]["accuracy"] > 0.9  # the words give these labels away
    history = pd.read_csv(run / "history.csv")
    assert {"network", "epoch", "examples_per_s"} <= set(history.columns)
    assert "TF-IDF" in (run / "model_card.md").read_text()


def test_leaderboard_holds_every_network_beside_the_baseline(trained):
    root, _ = trained
    run = root / "runs" / "nlp" / "latest"
    metrics = json.loads((run / "metrics.json").read_text())
    board = metrics["leaderboard"]["classification"]
    assert board["metric"] == "accuracy" and board["higher_is_better"]
    assert board["history_column"] == "val_accuracy" and board["best_baseline"] == "tfidf_logreg"
    assert board["selected"] == metrics["best"]
    linear = {"tfidf_logreg", "tfidf_keras", "tfidf_chars"}
    assert set(board["models"]) == {"cnn", "transformer", "blend"} | linear
    reports = {
        **metrics["networks"],
        "blend": metrics["blend"],
        "tfidf_logreg": metrics["baseline"],
    }
    reports |= {name: metrics[name] for name in ("tfidf_keras", "tfidf_chars")}
    for name, entry in board["models"].items():
        assert entry["status"] == "ok" and list(entry["test"]) == ["accuracy", "macro_f1"]
        assert entry["test"]["accuracy"] == reports[name]["test"]["accuracy"]
        assert entry["validation"]["macro_f1"] >= 0 and entry["train_seconds"] > 0
    kinds = {name: entry["kind"] for name, entry in board["models"].items()}
    assert kinds == {
        "cnn": "network",
        "transformer": "network",
        "blend": "blend",
        "tfidf_logreg": "baseline",
        "tfidf_keras": "baseline",
        "tfidf_chars": "baseline",
    }
    assert "time_to_baseline_s" in board["models"]["cnn"]
    assert "| tfidf_logreg (baseline)" in (run / "model_card.md").read_text()


def test_scoring_the_test_split_input_reproduces_the_test_accuracy(trained, tmp_path):
    root, sets = trained
    run = root / "runs" / "nlp" / "latest"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_input"] == "test_split.csv"
    test = pd.read_csv(run / "test_split.csv", keep_default_na=False)
    assert list(test.columns) == ["id", "text", "true_label"]
    assert test.id.tolist() == list(range(1, metrics["test"]["examples"] + 1))
    out = tmp_path / "test_scores.csv"
    assert cli("score", *sets, "--input", str(run / "test_split.csv"), "--output", str(out)) == 0
    scores = pd.read_csv(out)
    assert scores.row.tolist() == test.id.tolist()  # these texts are all scorable
    accuracy = (scores.predicted_label == test.true_label).mean()
    assert accuracy == pytest.approx(metrics["test"]["accuracy"])


def test_score_rejects_empty_texts_and_flags_truncated_ones(trained, tmp_path):
    root, sets = trained
    path, out = score_input(tmp_path), tmp_path / "scores.csv"
    assert cli("score", *sets, "--input", str(path), "--output", str(out)) == 0
    scores = pd.read_csv(out)
    rejects = pd.read_csv(tmp_path / "scores.rejects.csv")
    assert len(scores) + len(rejects) == 13
    assert dict(zip(rejects.id, rejects.reason, strict=True)) == {
        "empty": "empty text",
        "blank": "whitespace-only text",
    }
    assert scores.set_index("id").loc["long", "truncated"]
    assert scores.set_index("id").loc["long", "tokens"] == 160
    assert not scores.set_index("id").loc["t0", "truncated"]
    assert np.allclose(scores[["prob_neg", "prob_pos"]].sum(axis=1), 1, atol=1e-4)


def test_score_text_lines_and_jsonl(trained, tmp_path):
    _, sets = trained
    lines = tmp_path / "texts.txt"
    lines.write_bytes(b"the film was great\n\n   \nthe cast was awful \xff\n")
    assert cli("score", *sets, "--input", str(lines), "--output", str(tmp_path / "a.csv")) == 0
    scores, rejects = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "a.rejects.csv")
    assert scores.id.tolist() == [1, 4] and rejects.row.tolist() == [2, 3]
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text(
        '{"id": "a", "text": "lovely film"}\n{"id": "b"}\nnot json\n'
        '{"id": "c", "text": 5}\n"a string"\n\n'
    )
    assert cli("score", *sets, "--input", str(jsonl), "--output", str(tmp_path / "b.csv")) == 0
    rejects = pd.read_csv(tmp_path / "b.rejects.csv")
    assert pd.read_csv(tmp_path / "b.csv").id.tolist() == ["a"]
    reasons = rejects.reason.tolist()
    assert reasons[0] == "missing text" and reasons[1].startswith("not valid JSON")
    assert reasons[2].startswith("text is not a string")
    assert reasons[3:] == ["not a JSON object", "not a JSON object"]


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("in.csv", "body\nhello\n", "no text column 'text'"),
        ("in.xml", "<a/>", "unsupported file type"),
        ("missing.csv", None, "no such file"),
    ],
)
def test_bad_score_input_is_one_error_line(trained, tmp_path, capsys, name, content, message):
    _, sets = trained
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    assert cli("score", *sets, "--input", str(path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_bad_config_is_one_error_line(tmp_path, capsys):
    assert cli("train", "--config", SMOKE, "--set", "model.networks=[bert]") == 2
    assert "needs model.preset" in capsys.readouterr().err


def test_mixed_precision_and_xla_train_on_cpu(tmp_path):
    data = tmp_path / "train.csv"
    tiny_frame(64).to_csv(data, index=False)
    sets = tiny_sets(
        tmp_path,
        data,
        "train.mixed_precision=true",
        "train.xla=true",
        "model.networks=[cnn, transformer, fasttext]",
        "model.blend=false",  # the network ships: its layers are the ones under the policy
        "train.epochs=1",
    )
    try:
        assert cli("train", *sets) == 0
    finally:
        keras.mixed_precision.set_global_policy("float32")
    run = tmp_path / "runs" / "nlp" / "latest"
    meta = Meta.read(RunDir(run))
    assert meta.precision_policy == "mixed_bfloat16"
    # The sequence networks share one vectorizer, and each ran compiled with it in tf.data;
    # fastText trained, uncompiled, with its bags inside (the split refuses their shapes).
    assert meta.xla_compiled == {"cnn": True, "transformer": True, "fasttext": False}
    texts = tiny_frame(16, seed=9).text.tolist()
    model = load_model(RunDir(run))
    assert "mixed_bfloat16" in {layer.dtype_policy.name for layer in model.layers}
    mixed = predict_texts(model, texts, 8)
    assert mixed.dtype == np.float32 and np.allclose(mixed.sum(axis=1), 1, atol=1e-5)
    # The float32 twin (same weights, float32 math). Its vocabulary is a lookup table, not a
    # weight, so set_weights inside float32_twin does not carry it: it is copied over here.
    twin = float32_twin(model)
    twin.get_layer(VECTORIZE).set_vocabulary(model.get_layer(VECTORIZE).get_vocabulary())
    full = predict_texts(twin, texts, 8)
    # bfloat16 keeps 8 bits of mantissa: probabilities agree to a few hundredths.
    np.testing.assert_allclose(mixed, full, atol=0.05)


def test_tiny_bert_preset_through_the_pipeline(tmp_path):
    preset = make_tiny_bert_preset(tmp_path / "tiny_bert")
    data = tmp_path / "train.csv"
    tiny_frame(64).to_csv(data, index=False)
    sets = tiny_sets(
        tmp_path,
        data,
        f"model.preset={preset}",
        "model.networks=[bert]",
        "model.preset_sequence_length=16",
        "train.epochs=1",
    )
    assert cli("train", *sets) == 0
    assert cli("evaluate", *sets) == 0
    run = tmp_path / "runs" / "nlp" / "latest"
    meta = Meta.read(RunDir(run))
    assert meta.best == "bert" and meta.sequence_length == 16
    assert "bert" in json.loads((run / "metrics.json").read_text())["networks"]
    path, out = score_input(tmp_path), tmp_path / "scores.csv"
    assert cli("score", *sets, "--input", str(path), "--output", str(out)) == 0
    scores = pd.read_csv(out)
    assert len(scores) == 11 and scores.set_index("id").loc["long", "truncated"]
    saved = tf.saved_model.load(str(run / "saved_model"))
    texts = pd.read_csv(path, keep_default_na=False).set_index("id").loc[scores.id, "text"]
    served = saved.serve(tf.constant(texts.tolist())).numpy()
    np.testing.assert_allclose(served, scores[["prob_neg", "prob_pos"]], atol=1e-5)


def test_multi_label_train_refit_evaluate_score(tmp_path):
    topics = ["sports", "politics", "tech"]
    pairs = [(topics[i % 3], topics[i // 3 % 3]) for i in range(64)]
    rows = [(f"story on {a} and {b}", ";".join(dict.fromkeys([a, b]))) for a, b in pairs]
    data = tmp_path / "topics.csv"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(data, index=False)
    sets = tiny_sets(
        tmp_path,
        data,
        "data.label_delimiter=;",
        "model.networks=[bilstm]",
        "train.epochs=2",
        "train.refit=true",  # refitted on train + validation, the blend's TF-IDF half too
        "model.blend=true",
    )
    assert cli("train", *sets) == 0 and cli("evaluate", *sets) == 0
    run = tmp_path / "runs" / "nlp" / "latest"
    meta = Meta.read(RunDir(run))
    best_epochs = int(pd.read_csv(run / "history-bilstm.csv").val_loss.idxmin()) + 1
    assert meta.refit == {"bilstm": best_epochs}
    refit = pd.read_csv(run / "history-bilstm_refit.csv")
    assert len(refit) == best_epochs  # no validation while refitting
    assert "val_loss" not in refit.columns or refit.val_loss.isna().all()
    metrics = json.loads((run / "metrics.json").read_text())
    # validation scores from before the refit, which saw the validation texts
    before = json.loads((run / "validation_before_refit.json").read_text())
    assert {"bilstm", "blend", "tfidf_keras"} <= set(before)
    assert metrics["networks"]["bilstm"]["validation"] == before["bilstm"]
    assert metrics["blend"]["validation"] == before["blend"]
    assert metrics["data"]["multi_label"] and "micro_f1" in metrics["test"]
    assert set(metrics["test"]["per_class"]) == set(topics)
    out = tmp_path / "scores.csv"
    assert cli("score", *sets, "--input", str(data), "--output", str(out)) == 0
    scores = pd.read_csv(out, keep_default_na=False)
    probs = ["prob_politics", "prob_sports", "prob_tech"]
    assert [c for c in scores.columns if c.startswith("prob_")] == probs
    predicted = scores[probs].to_numpy() >= 0.5
    assert [
        ";".join(np.array(sorted(topics))[row]) for row in predicted
    ] == scores.predicted_label.tolist()


def test_transformer_diverging_at_rate_1000_is_failed_and_cnn_selected(tmp_path, capsys):
    data = tmp_path / "train.csv"
    tiny_frame(64).to_csv(data, index=False)
    sets = tiny_sets(tmp_path, data, "model.learning_rates.transformer=1000", "model.blend=false")
    assert cli("train", *sets) == 0
    assert "train: transformer diverged" in capsys.readouterr().out
    run = tmp_path / "runs" / "nlp" / "latest"
    meta = Meta.read(RunDir(run))
    assert meta.best == "cnn" and set(meta.failed_networks) == {"transformer"}
    assert meta.learning_rates == {"cnn": 0.001, "transformer": 1000.0} and meta.blend == {}
    assert not (run / "models" / "transformer.keras").exists()
    assert cli("evaluate", *sets) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["networks"]) == {"cnn"} and "blend" not in metrics
    assert metrics["failed_networks"]["transformer"].startswith("diverged: ")
    board = metrics["leaderboard"]["classification"]
    assert board["selected"] == "cnn"
    assert board["models"]["transformer"]["status"] == "failed"
    assert "diverged" in board["models"]["transformer"]["reason"]
    card = (run / "model_card.md").read_text()
    assert "`transformer` **failed**: diverged" in card and "`transformer` failed (" in card


def test_every_network_diverging_fails_the_run_with_one_line(tmp_path, capsys):
    data = tmp_path / "train.csv"
    tiny_frame(64).to_csv(data, index=False)
    sets = tiny_sets(tmp_path, data, "model.learning_rates={transformer: 1000, cnn: 100000}")
    assert cli("train", *sets) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: every network failed (cnn, transformer)")
    runs = tmp_path / "runs" / "nlp"
    assert not (runs / "latest").exists()
    (run,) = [p for p in runs.iterdir() if p.name != "prepared"]
    assert json.loads((run / "metrics.json").read_text())["status"] == "failed"
    assert "Every network of this run failed" in (run / "model_card.md").read_text()


def test_per_network_learning_rate_is_checked(capsys):
    assert cli("train", "--config", SMOKE, "--set", "model.learning_rates.lstm=0.01") == 2
    assert "model.learning_rates.lstm: no such network" in capsys.readouterr().err
    assert cli("train", "--config", SMOKE, "--set", "model.learning_rates.bilstm=nan") == 2
    assert "expected a finite number" in capsys.readouterr().err


def test_char_cnn_kernel_widths_are_checked(capsys):
    assert cli("train", "--config", SMOKE, "--set", "model.char_cnn_widths=[3, 0]") == 2
    assert "model.char_cnn_widths: name kernel widths >= 1" in capsys.readouterr().err


def test_scorer_graph_call_gives_the_predict_probabilities_over_uneven_batches(trained):
    root, _ = trained
    run = RunDir(root / "runs" / "nlp" / "latest")
    scorer = TextScorer(run, batch_size=4, threshold=0.5)
    texts = tiny_frame(9, seed=7).text.tolist()  # 9 texts: two full batches and one of 1
    expected = predict_texts(scorer.model, texts, 4)
    np.testing.assert_allclose(scorer.probabilities(texts), expected, atol=1e-6)
    assert scorer.probabilities([]).shape == (0, 2)


def test_keras_hub_is_imported_only_for_models_that_use_it(trained):
    root, _ = trained
    models = root / "runs" / "nlp" / "latest" / "models"
    assert not uses_keras_hub(models / "cnn.keras")
    assert uses_keras_hub(models / "transformer.keras")  # KerasHub's TransformerEncoder
    assert uses_keras_hub(models / "missing.keras")  # unreadable: Keras gives the error


def test_best_epoch_is_the_first_best_of_the_monitored_column():
    history = pd.DataFrame(
        {"val_loss": [0.5, 0.4, 0.45, 0.6], "val_accuracy": [0.7, 0.72, 0.75, 0.75]}
    )
    assert best_epoch(history, "val_loss", "min") == 1
    assert best_epoch(history, "val_accuracy", "max") == 2  # the first of a tie
    assert best_epoch(history.assign(val_loss=np.nan), "val_loss", "min") == 0


def test_small_training_splits_refit_by_themselves():
    data = types.SimpleNamespace(splits={"train": tdata.Split(["a"] * 100, np.zeros(100))})
    assert refits(Config(train=TextTrainConfig(refit_below=101)), data)
    assert not refits(Config(train=TextTrainConfig(refit_below=100)), data)
    assert refits(Config(train=TextTrainConfig(refit=True, refit_below=0)), data)


def test_monitor_metric_keeps_and_refits_the_best_metric_epoch(tmp_path):
    data = tmp_path / "train.csv"
    tiny_frame(64).to_csv(data, index=False)
    sets = tiny_sets(
        tmp_path,
        data,
        "model.networks=[cnn]",
        "train.epochs=3",
        "train.patience=3",
        "train.monitor=metric",
        "train.refit=true",
    )
    assert cli("train", *sets) == 0
    run = tmp_path / "runs" / "nlp" / "latest"
    meta = Meta.read(RunDir(run))
    history = pd.read_csv(run / "history-cnn.csv")
    kept = int(history.val_accuracy.idxmax())  # balanced texts: the run's metric is accuracy
    assert meta.refit == {"cnn": kept + 1}
    assert meta.validation_loss["cnn"] == pytest.approx(history.val_loss[kept], abs=1e-5)


def test_run_budget_is_shared_out_over_the_networks_left():
    cfg = TextTrainConfig(budget_minutes=6.0, max_minutes=0.0)
    assert network_minutes(cfg, 0.0, 2) == 3.0  # two networks: half each
    assert network_minutes(cfg, 1.0, 1) == 5.0  # the first stopped early: the rest is the next's
    assert network_minutes(cfg, 7.0, 1) == 0.01  # spent: stop after one epoch, never "no limit"
    assert network_minutes(TextTrainConfig(budget_minutes=6.0, max_minutes=2.0), 0.0, 2) == 2.0
    assert network_minutes(TextTrainConfig(max_minutes=8.0), 3.0, 1) == 8.0  # no run budget
