"""`pretrain`: masked-token training of the encoder on a tiny corpus plus unlabelled lines, and
`train` fine-tuning the transformer from it."""

import json

import numpy as np
import pytest

from apps.nlp.text import pretrain as ptrain
from apps.nlp.text.config import Config, DataConfig, ModelConfig
from apps.nlp.text.model import (
    build_encoder,
    build_transformer,
    encoder_layers,
    load_encoder,
    load_model,
)
from shared.io import DataError
from shared.run import RunDir
from tests.apps.nlp.text.conftest import cli, tiny_frame, tiny_sets


def test_mask_token_is_the_last_id_and_no_text_produces_it():
    config = ModelConfig(max_tokens=20, sequence_length=6)
    vectorizer = ptrain.masked_vectorizer(config, tiny_frame(16).text.tolist())
    assert vectorizer.get_vocabulary()[-1] == ptrain.MASK
    ids = np.asarray(vectorizer(["[MASK] the film [mask]"]))
    assert vectorizer.vocabulary_size() - 1 not in ids


def test_unlabelled_lines_skip_blanks_and_a_folder_is_one_error(tmp_path):
    (tmp_path / "more.txt").write_text("a fine film\n\n  \nthe cast was dull\n", encoding="utf-8")
    texts = ptrain.unlabelled_texts(DataConfig(unlabelled_path=str(tmp_path / "*.txt")))
    assert texts == ["a fine film", "the cast was dull"]
    assert ptrain.unlabelled_texts(DataConfig()) == []
    with pytest.raises(DataError, match="names text files, not a folder"):
        ptrain.unlabelled_texts(DataConfig(unlabelled_path=str(tmp_path)))


TINY = ModelConfig(max_tokens=40, sequence_length=8, embedding_dim=8, feed_forward_dim=8)


def test_masked_lm_trains_the_encoder_layers_it_shares():
    vectorizer = ptrain.masked_vectorizer(TINY, tiny_frame(16).text.tolist())
    encoder = build_encoder(TINY, vectorizer)
    mlm = ptrain.masked_lm(TINY, encoder)
    assert {w.path for w in encoder.trainable_weights} <= {w.path for w in mlm.trainable_weights}


def test_pretrained_encoder_learns_and_the_transformer_starts_from_its_weights():
    config = Config(model=TINY)
    config.pretrain.epochs, config.pretrain.batch_size, config.train.verbose = 3, 16, 0
    encoder, history, _ = ptrain.fit_encoder(config, tiny_frame(64).text.tolist())
    assert history["loss"][-1] < history["loss"][0]  # the masked tokens get easier to guess
    vectorizer = encoder.get_layer("vectorize")
    model = build_transformer(TINY, vectorizer, 2, encoder=encoder)
    for name in encoder_layers(TINY):
        for ours, theirs in zip(
            model.get_layer(name).get_weights(), encoder.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(ours, theirs)


@pytest.mark.slow  # the CLI path of the test above: pretrain, then train from its folder
def test_pretrain_then_train_starts_the_transformer_from_the_encoder(tmp_path, capsys):
    data = tmp_path / "train.csv"
    tiny_frame(64).to_csv(data, index=False)
    (tmp_path / "more.txt").write_text("the film was superb\nthe cast was awful\n" * 8)
    sets = tiny_sets(
        tmp_path,
        data,
        f"data.unlabelled_path={tmp_path / 'more.txt'}",
        "pretrain.epochs=2",
        "run.run_id=pre",
    )
    assert cli("pretrain", *sets) == 0
    folder = tmp_path / "runs" / "nlp" / "pre"
    info = json.loads((folder / ptrain.INFO).read_text())
    assert info["texts"] == 44 + 16 and info["unlabelled_texts"] == 16
    assert len(info["loss"]) == 2 and all(np.isfinite(info["loss"]))  # learning: test above
    assert f"model.pretrained={folder}" in capsys.readouterr().out
    assert not (tmp_path / "runs" / "nlp" / "latest").exists()  # pretraining ships nothing
    tuned = tiny_sets(
        tmp_path, data, "model.networks=[transformer]", "model.blend=false", "train.epochs=1"
    )
    assert cli("train", *tuned, "--set", f"model.pretrained={folder}") == 0
    run = RunDir(tmp_path / "runs" / "nlp" / "latest")
    encoder, model = load_encoder(str(folder)), load_model(run)
    vocabulary = encoder.get_layer("vectorize").get_vocabulary()
    assert vocabulary[-1] == ptrain.MASK
    assert model.get_layer("vectorize").get_vocabulary() == vocabulary  # the encoder's own
    trained = model.get_layer("transformer_0").get_weights()
    assert len(trained) == len(encoder.get_layer("transformer_0").get_weights())
