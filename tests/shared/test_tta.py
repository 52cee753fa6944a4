"""Test-time augmentation: the views, their averaging and the choice on validation."""

import numpy as np
import pytest

from shared import tta


def batch():
    """Two 3x4 one-channel images whose pixels are their own (row, column) codes."""
    image = (np.arange(3)[:, None] * 10 + np.arange(4)[None, :]).astype(np.uint8)
    return np.stack([image, image + 100])[..., None]


def test_flips_mirror_rows_and_columns():
    images = batch()
    h = tta.apply_view(images, tta.parse_view("hflip"))
    v = tta.apply_view(images, tta.parse_view("vflip"))
    both = tta.apply_view(images, tta.parse_view("rot180"))
    np.testing.assert_array_equal(h[0, :, :, 0], images[0, :, ::-1, 0])
    np.testing.assert_array_equal(v[0, :, :, 0], images[0, ::-1, :, 0])
    np.testing.assert_array_equal(both, images[:, ::-1, ::-1])
    np.testing.assert_array_equal(tta.apply_view(images, tta.parse_view("identity")), images)
    assert h.dtype == np.uint8 and h.shape == images.shape


def test_shift_moves_content_and_replicates_the_edge():
    images = batch()
    right = tta.apply_view(images, tta.parse_view("shift:0:0.25"))  # 1 of 4 columns
    np.testing.assert_array_equal(right[0, 0, :, 0], [0, 0, 1, 2])
    up = tta.apply_view(images, tta.parse_view("shift:-0.1:0"))  # rounds to 0: one pixel
    np.testing.assert_array_equal(up[0, :, 0, 0], [10, 20, 20])
    np.testing.assert_array_equal(up[1], images[1, [1, 2, 2]])


@pytest.mark.parametrize(
    "name", ["mirror", "shift:0.1", "shift:a:0", "shift:0.5:0", "shift:nan:0", "shift:0:-0.7"]
)
def test_unknown_or_out_of_range_views_are_refused_with_the_accepted_names(name):
    with pytest.raises(ValueError, match="expected one of identity, hflip"):
        tta.parse_view(name)


def test_views_need_one_and_no_repeats():
    with pytest.raises(ValueError, match="at least one view"):
        tta.parse_views([])
    with pytest.raises(ValueError, match="repeat"):
        tta.parse_views(["hflip", "hflip"])
    assert [v.name for v in tta.parse_views(["identity", "shift:0.05:0"])] == [
        "identity",
        "shift:0.05:0",
    ]


def test_predictions_are_averaged_over_the_views_in_order():
    images = batch().astype(np.float64)
    views = tta.parse_views(["identity", "hflip"])

    def predict(x):  # "probability" of class 1: the mean of the first column
        p = x[:, :, 0, 0].mean(axis=1) / 255
        return np.stack([1 - p, p], axis=1)

    outputs = tta.predict_views(predict, images, views)
    np.testing.assert_allclose(outputs[1], predict(images[:, :, ::-1]))
    mean = tta.average(outputs)
    np.testing.assert_allclose(mean, (predict(images) + predict(images[:, :, ::-1])) / 2)
    np.testing.assert_allclose(mean.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="at least one view"):
        tta.average([])


def test_tta_is_chosen_only_when_it_strictly_wins_on_validation():
    assert tta.choose(0.80, 0.81)
    assert not tta.choose(0.80, 0.80)
    assert not tta.choose(0.80, 0.79)
    assert not tta.choose(float("nan"), 0.9) and not tta.choose(0.8, float("nan"))
    assert tta.choose(0.5, 0.4, higher_is_better=False)  # a loss: lower wins
