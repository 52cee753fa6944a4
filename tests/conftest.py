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


# Fixtures that train an app's tiny run once per test session (in each app's conftest.py).
TRAINED_RUN_FIXTURES = {"trained", "contract_run", "scoring_run"}


# tryfirst: the marker must be on the item before xdist's worker reads it in its own
# collection_modifyitems (it appends the group to the test id there; pytest 9 ignores that id,
# hence pytest < 9 in pyproject.toml).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`--dist loadgroup`), the tests that use an app's session-scoped
    trained run go to one worker, so the suite trains each app's run once, not once a worker."""
    for item in items:
        if TRAINED_RUN_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group(item.path.parent.name))


def pytest_generate_tests(metafunc):
    """Every bad-input case of tests/scorer_contract.py that applies to a registered scorer."""
    if metafunc.cls is not None and "case" in metafunc.fixturenames:
        from tests.scorer_contract import ScorerContract, parametrize_cases

        if issubclass(metafunc.cls, ScorerContract):
            parametrize_cases(metafunc)
