"""Test set-up shared by the whole suite: quiet TensorFlow, a temp run root, a float32 swap."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture
def run_root(tmp_path):
    """A private runs/ folder for one test."""
    root = tmp_path / "runs"
    root.mkdir()
    return root


@pytest.fixture
def swap_in_float32_twin():
    """Replace a saved mixed-precision model by its float32 twin: same weights, float32 math.

    Scoring before and after the swap shows how far mixed precision moves the predictions.
    """

    def swap(path):
        import keras

        from shared.training import float32_twin

        model = keras.saving.load_model(path, compile=False, safe_mode=True)
        assert {layer.dtype_policy.name for layer in model.layers} >= {"mixed_bfloat16"}
        float32_twin(model).save(path)

    return swap
