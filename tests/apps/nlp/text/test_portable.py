"""Every text network, the blend and its TF-IDF members (words, characters) load from
`model.keras` in a fresh process that imports only keras and keras_hub (no project code, safe
mode) and give the same probabilities."""

import json
import os
import subprocess
import sys

import numpy as np

from apps.nlp.text import blend
from apps.nlp.text.config import ModelConfig
from apps.nlp.text.data import Split
from apps.nlp.text.model import BUILDERS, load_network, predict_texts
from shared.run import RunDir
from tests.apps.nlp.text.conftest import tiny_frame
from tests.apps.nlp.text.test_model import build_tiny

LOADER = """
import json, sys
import numpy as np
import keras, keras_hub
cases = json.loads(sys.argv[1])
out = {}
for name, path in cases["models"].items():
    model = keras.saving.load_model(path, safe_mode=True)
    texts = keras.ops.convert_to_tensor([[t] for t in cases["texts"]], dtype="string")
    out[name] = np.asarray(model.predict(texts, verbose=0)).tolist()
project = sorted({m.split(".")[0] for m in sys.modules} & {"apps", "shared", "tests"})
print(json.dumps({"probs": out, "project_modules": project}))
"""


def test_every_network_and_the_blend_load_with_only_keras_and_keras_hub(trained, tmp_path):
    root, _ = trained
    run = root / "runs" / "nlp" / "latest"
    texts = tiny_frame(8, seed=3).text.tolist() + [":)"]
    models = {p.stem: str(p) for p in (run / "models").glob("*.keras")}
    expected = {n: predict_texts(load_network(RunDir(run), n), texts, 4) for n in models}
    for name in set(BUILDERS) - set(models):  # the networks the shared run does not train
        models[name] = str(tmp_path / f"{name}.keras")
        model = build_tiny(name, tiny_frame(16).text.tolist())
        model.save(models[name])
        expected[name] = predict_texts(model, texts, 4)
    # the character member with the word 1-2 grams beside it (model.blend_char_words)
    train = Split(tiny_frame(48).text.tolist(), np.arange(48) % 2)
    config = ModelConfig(tfidf_max_tokens=200, blend_char_words=True)
    joined, _ = blend.fit_tfidf(config, train, train, 2, False, chars=True)
    models["tfidf_words_chars"] = str(tmp_path / "tfidf_words_chars.keras")
    joined.save(models["tfidf_words_chars"])
    expected["tfidf_words_chars"] = predict_texts(joined, texts, 4)
    assert set(BUILDERS) | {"blend", "tfidf_keras", "tfidf_chars"} <= set(models)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"TF_CPP_MIN_LOG_LEVEL": "3"}
    cases = json.dumps({"models": models, "texts": texts})
    done = subprocess.run(
        [sys.executable, "-c", LOADER, cases],
        cwd=tmp_path,  # not the repository: `apps` and `shared` are not importable from here
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["project_modules"] == []
    for name, prob in result["probs"].items():
        np.testing.assert_allclose(np.array(prob), expected[name], atol=1e-5, err_msg=name)
