"""KerasHub presets come only from local folders: nothing is ever downloaded.

`from_preset` downloads a `kaggle://` or `hf://` handle or a bare preset name. Every app that
loads a preset refuses those with one ConfigError naming its config key, before KerasHub is
called: the tests make any call to `from_preset` fail, so they never depend on a download
failing (no network is reachable here anyway).
"""

import keras_hub
import pytest

from apps.medical.config import AugmentConfig as MedicalAugment
from apps.medical.config import ModelConfig as MedicalModel
from apps.medical.model import build_model as build_medical
from apps.nlp.text.config import ModelConfig as TextModel
from apps.nlp.text.model import build_bert
from apps.vision.config import AugmentConfig as VisionAugment
from apps.vision.config import ModelConfig as VisionModel
from apps.vision.model import build_model as build_vision
from shared.config import ConfigError
from shared.training import local_preset

REMOTE = [
    "kaggle://keras/resnetv2/keras/resnet_18_imagenet",
    "hf://keras/resnet_18_imagenet",
    "resnet_18_imagenet",  # a KerasHub preset name: looked up on Kaggle
    "bert_tiny_en_uncased",
]


@pytest.fixture
def no_download(monkeypatch):
    """Any call to KerasHub's preset loaders fails the test."""

    def refuse(*args, **kwargs):
        pytest.fail(f"from_preset was called with {args[-1:]}")

    for cls in (
        keras_hub.models.Backbone,
        keras_hub.models.TextClassifier,
        keras_hub.models.TextClassifierPreprocessor,
    ):
        monkeypatch.setattr(cls, "from_preset", refuse)


def build_vision_transfer(preset):
    config = VisionModel(architecture="transfer", backbone=preset, dense_units=0)
    return build_vision(config, VisionAugment(enabled=False), 3, [16, 16], 1)


def build_medical_transfer(preset):
    config = MedicalModel(architecture="transfer", backbone=preset)
    return build_medical(config, MedicalAugment(enabled=False), 2, [16, 16], 1)


def build_text_bert(preset):
    return build_bert(TextModel(networks=["bert"], preset=preset), 2)


APPS = [
    pytest.param(build_vision_transfer, "model.backbone", id="vision"),
    pytest.param(build_medical_transfer, "model.backbone", id="medical"),
    pytest.param(build_text_bert, "model.preset", id="text"),
]


@pytest.mark.parametrize("preset", REMOTE)
@pytest.mark.parametrize(("build", "key"), APPS)
def test_remote_presets_are_refused_before_from_preset(no_download, build, key, preset):
    with pytest.raises(ConfigError) as caught:
        build(preset)
    message = str(caught.value)
    assert message.startswith(f"{key}: {preset!r} is ")
    assert "nothing is downloaded" in message and "\n" not in message


@pytest.mark.parametrize(("build", "key"), APPS)
def test_a_folder_that_is_not_a_preset_is_refused(no_download, tmp_path, build, key):
    with pytest.raises(ConfigError, match=f"^{key}: .* a folder without config.json"):
        build(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=f"^{key}: .* a folder without model.weights.h5"):
        build(str(tmp_path))
    with pytest.raises(ConfigError, match=f"^{key}: .* is not a folder"):
        build(str(tmp_path / "missing"))


def test_a_local_folder_named_like_a_hub_preset_is_passed_as_an_absolute_path(
    tmp_path, monkeypatch
):
    # KerasHub maps a bare name to its Kaggle preset even when a folder of that name exists
    # in the working directory; an absolute path is never taken for a name.
    folder = tmp_path / "resnet_18_imagenet"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.weights.h5").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert local_preset("resnet_18_imagenet", "model.backbone") == str(folder.resolve())


def test_vision_train_with_a_preset_name_is_one_line_and_exit_2(tmp_path, capsys):
    from shared.cli import main

    code = main(
        [
            "vision",
            "train",
            "--config",
            "apps/vision/configs/smoke.yaml",
            "--set",
            f"run.root={tmp_path}",
            "--set",
            f"data.path={tmp_path / 'digits'}",
            "--set",
            "model.architecture=transfer",
            "--set",
            "model.backbone=resnet_18_imagenet",
        ]
    )
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: model.backbone: 'resnet_18_imagenet' is not a folder (a preset name would be a "
        "download); nothing is downloaded, so give a local KerasHub preset folder (one written "
        "by save_to_preset)"
    ]
