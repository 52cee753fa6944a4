"""Self-supervised pretraining of the Transformer encoder on the user's own text: masked-token
prediction (BERT's objective, KerasHub's `MaskedLMMaskGenerator` and `MaskedLMHead`) over the
training texts and any unlabelled text files (`data.unlabelled_path`, one text per line).

The vocabulary is adapted on all those texts, plus one `[MASK]` token that no text can produce
(the vectorizer strips brackets). The encoder, vectorizer inside, is saved as `encoder.keras` in
the pretraining run folder, with `pretrain.json` (its shape, the texts, the loss per epoch);
`train --set model.pretrained=<that folder>` starts the transformer from it.
"""

import dataclasses
import time

import keras
import tensorflow as tf

from apps.nlp.text import data as tdata
from apps.nlp.text.config import Config, ModelConfig
from apps.nlp.text.model import ENCODER, VECTORIZE, build_encoder, encoder_layers
from shared.io import DataError, atomic_path, write_json
from shared.run import RunDir

MASK = "[MASK]"
SHAPE = ("sequence_length", "embedding_dim", "num_heads", "feed_forward_dim", "transformer_layers")
INFO = "pretrain.json"


def unlabelled_texts(cfg) -> list[str]:
    """The non-blank lines of every file `data.unlabelled_path` names (none when empty)."""
    if not cfg.unlabelled_path:
        return []
    texts = []
    for path in tdata.resolve_paths(cfg.unlabelled_path):
        if path.is_dir():
            raise DataError(f"{path}: data.unlabelled_path names text files, not a folder")
        text, _ = tdata.read_text_file(path, cfg.encoding)
        texts += [line for line in tdata.lines_of(text) if line.strip()]
    return texts


def masked_vectorizer(config: ModelConfig, texts: list[str]) -> keras.layers.TextVectorization:
    """Token ids over the vocabulary of `texts`, its last id the [MASK] token."""
    vectorizer = keras.layers.TextVectorization(
        max_tokens=config.max_tokens - 1,
        output_sequence_length=config.sequence_length,
        name=VECTORIZE,
    )
    vectorizer.adapt(tf.constant(texts, dtype=tf.string), batch_size=1024)
    vocabulary = vectorizer.get_vocabulary()
    vectorizer.set_vocabulary(vocabulary + [MASK])
    return vectorizer


def masked_lm(config: ModelConfig, encoder: keras.Model) -> keras.Model:
    """(token ids, mask positions) -> the vocabulary distribution at each masked position,
    through the encoder's own layers (so training it trains them), the output projection tied
    to the token embedding."""
    import keras_hub

    ids = keras.Input(shape=(config.sequence_length,), dtype="int32", name="token_ids")
    positions = keras.Input(shape=(None,), dtype="int32", name="mask_positions")
    names = encoder_layers(config)
    x = ids
    for name in names:
        x = encoder.get_layer(name)(x)
    embedding = encoder.get_layer(names[0])
    head = keras_hub.layers.MaskedLMHead(
        token_embedding=embedding.token_embedding, activation="softmax", name="mlm_head"
    )
    return keras.Model([ids, positions], head(x, mask_positions=positions), name="masked_lm")


def masked_dataset(texts, vectorizer, config: ModelConfig, cfg, seed: int) -> tf.data.Dataset:
    """((masked ids, positions), original ids there, weights) batches, re-masked every epoch."""
    import keras_hub

    vocabulary = vectorizer.vocabulary_size()
    masker = keras_hub.layers.MaskedLMMaskGenerator(
        vocabulary_size=vocabulary,
        mask_selection_rate=cfg.mask_rate,
        mask_token_id=vocabulary - 1,
        mask_selection_length=max(1, round(config.sequence_length * cfg.mask_rate * 2)),
        unselectable_token_ids=[0],  # padding is never a target
    )

    def mask(batch):
        out = masker(vectorizer(batch))
        return (out["token_ids"], out["mask_positions"]), out["mask_ids"], out["mask_weights"]

    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(texts, dtype=tf.string))
    dataset = dataset.shuffle(len(texts), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(cfg.batch_size).map(mask).prefetch(tf.data.AUTOTUNE)


def fit_encoder(config: Config, texts: list[str]):
    """Pretrain a fresh encoder on `texts`; (encoder, loss per epoch, seconds)."""
    model_cfg, cfg = config.model, config.pretrain
    keras.utils.set_random_seed(config.train.seed)
    vectorizer = masked_vectorizer(model_cfg, texts)
    encoder = build_encoder(model_cfg, vectorizer)
    mlm = masked_lm(model_cfg, encoder)
    steps = max(1, -(-len(texts) // cfg.batch_size))
    train = dataclasses.replace(
        config.train, epochs=cfg.epochs, learning_rate=cfg.learning_rate, warmup_epochs=1.0
    )
    from shared import training

    mlm.compile(
        optimizer=training.make_optimizer(train, steps),
        loss="sparse_categorical_crossentropy",
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    mlm.optimizer.clipnorm = model_cfg.clipnorm or None
    dataset = masked_dataset(texts, vectorizer, model_cfg, cfg, config.train.seed)
    start = time.perf_counter()
    history = mlm.fit(dataset, epochs=cfg.epochs, verbose=config.train.verbose)
    return encoder, history.history, round(time.perf_counter() - start, 1)


def save(run: RunDir, encoder: keras.Model, config: ModelConfig, info: dict) -> None:
    with atomic_path(run.path / ENCODER, suffix=".keras") as tmp:
        encoder.save(tmp)
    shape = {key: getattr(config, key) for key in SHAPE}
    write_json(run.path / INFO, info | {"shape": shape})


def pretrained_shape(folder: str) -> dict:
    """The model.* settings the encoder in `folder` was built with (its shape)."""
    from shared.io import read_json

    return read_json(f"{folder}/{INFO}")["shape"]
