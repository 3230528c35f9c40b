"""The thesis' metrics as pure functions, against hand-computed values."""
import math

import numpy as np
import pytest

from agents.eval.metrics import MeanStd, clip_t, cosine_x100, image_fidelity, mean_over, mean_std_over_seeds


def test_identical_embeddings_score_100_and_orthogonal_0():
    v = np.array([0.3, -1.2, 2.0, 0.5])
    assert cosine_x100(v, v)[0] == pytest.approx(100.0)
    assert cosine_x100([1.0, 0.0, 0.0], [0.0, 5.0, 0.0])[0] == pytest.approx(0.0, abs=1e-12)
    assert cosine_x100([1.0, 2.0], [-1.0, -2.0])[0] == pytest.approx(-100.0)


def test_hand_computed_cosine_and_scale_invariance():
    # cos([1, 0], [1, 1]) = 1/sqrt(2)
    assert cosine_x100([1.0, 0.0], [1.0, 1.0])[0] == pytest.approx(100 / math.sqrt(2))
    # [1, 2, 2] · [2, 0, 1] = 4; |a| = 3, |b| = sqrt(5)
    expected = 100 * 4 / (3 * math.sqrt(5))
    assert cosine_x100([1, 2, 2], [2, 0, 1])[0] == pytest.approx(expected)
    assert cosine_x100([10, 20, 20], [0.2, 0, 0.1])[0] == pytest.approx(expected)


def test_clip_t_and_image_fidelity_rows():
    assert clip_t(np.array([[3.0, 4.0]]), np.array([4.0, 3.0])) == pytest.approx(100 * 24 / 25)
    recreated = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    out = image_fidelity(recreated, np.array([1.0, 0.0]))
    assert out == pytest.approx([100.0, 0.0, 100 / math.sqrt(2)])


@pytest.mark.parametrize("a,b,match", [
    ([0.0, 0.0], [1.0, 0.0], "zero embedding"),
    ([1.0, 0.0], [1.0, 0.0, 0.0], "sizes differ"),
    ([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], "row counts"),
    ([np.nan, 1.0], [1.0, 0.0], "NaN"),
])
def test_bad_embeddings_are_errors_not_scores(a, b, match):
    with pytest.raises(ValueError, match=match):
        cosine_x100(a, b)


def test_mean_std_over_seeds_hand_computed():
    # per-seed means over images: 85, 75, 95 -> mean 85, population std sqrt(200/3)
    cell = mean_std_over_seeds({0: [80, 90], 1: [70, 80], 2: [90, 100]})
    assert cell.mean == pytest.approx(85.0)
    assert cell.std == pytest.approx(math.sqrt(200 / 3))
    assert (cell.n_seeds, cell.n_images) == (3, 2)
    assert cell.format() == "85.00±8.16"


def test_mean_std_refuses_uneven_or_empty_seeds():
    with pytest.raises(ValueError, match="different numbers of images"):
        mean_std_over_seeds({0: [1.0, 2.0], 1: [1.0]})
    with pytest.raises(ValueError, match="seed 1 has no values"):
        mean_std_over_seeds({0: [1.0], 1: []})
    empty = mean_std_over_seeds({})
    assert math.isnan(empty.mean) and empty.format() == "–"


def test_mean_over_for_clip_t():
    cell = mean_over([30.0, 40.0])
    assert cell == MeanStd(35.0, 0.0, 1, 2)
    assert cell.format(with_std=False) == "35.00"
