"""Feature-network FID through torchmetrics: ~0 for a set against itself, growing with added noise."""
import pytest
import torch

from training.metrics.feature_net import FashionFeatureNet, FeatureNetTrainConfig, load_fashion_split, train_feature_net
from training.metrics.fid import FIDMetric, frechet_distance

ROOT = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(scope="module")
def feature_dir(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("featnet")
    info = train_feature_net(FeatureNetTrainConfig(epochs=1, batch_size=64, train_limit=768, test_limit=300), ROOT, out)
    # 12 steps on 768 images: far from converged, but well above chance (10 %)
    assert info["test_accuracy"] > 0.3 and info["feature_dim"] == 128
    return out


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_noise(feature_dir):
    images, _ = load_fashion_split(ROOT, "test", 300)
    metric = FIDMetric.from_feature_net(feature_dir, batch_size=256).set_reference(images)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(images.shape, generator=gen)
    same = metric.score(images)
    scores = [metric.score((images + s * noise).clamp(-1, 1)) for s in (0.05, 0.2, 0.5)]
    assert abs(same) < 1e-3 * scores[0]
    assert scores[0] < scores[1] < scores[2]
    # another set of real images sits between identical and noisy
    other, _ = load_fashion_split(ROOT, "train", 300)
    assert 0 < metric.score(other) < scores[2]


def test_metric_matches_the_plain_frechet_formula(feature_dir):
    from training.metrics.feature_net import FeatureExtractor, load_feature_net

    a, _ = load_fashion_split(ROOT, "test", 300)
    b, _ = load_fashion_split(ROOT, "train", 300)
    extractor = FeatureExtractor(load_feature_net(feature_dir))
    expected = frechet_distance(extractor(a), extractor(b))
    got = FIDMetric(extractor, "x").set_reference(a).score(b)
    assert got == pytest.approx(expected, rel=1e-3)


def test_clear_errors():
    with pytest.raises(FileNotFoundError, match="Inception-v3"):
        FIDMetric.inception("/nonexistent/weights.pth")
    with pytest.raises(RuntimeError, match="set_reference"):
        FIDMetric(FashionFeatureNet(), "x").score(torch.zeros(4, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        FashionFeatureNet().features(torch.zeros(2, 3, 32, 32))


def test_frechet_distance_matches_the_closed_form_and_scipy():
    """Public-API formula (no torchmetrics private helper): 1-D closed form, then D-dimensional against scipy's sqrtm."""
    import numpy as np
    from scipy import linalg

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 1, generator=gen, dtype=torch.float64)
    x = (x - x.mean()) / x.std()  # exactly mean 0, std 1 (unbiased, as torch.cov)
    # N(0, 1) against N(3, 2²): (μ_a − μ_b)² + (σ_a − σ_b)² = 9 + 1
    assert frechet_distance(x, 3 + 2 * x) == pytest.approx(10.0, rel=1e-9)
    a = torch.randn(600, 8, generator=gen, dtype=torch.float64) @ torch.randn(8, 8, generator=gen, dtype=torch.float64)
    b = torch.randn(600, 8, generator=gen, dtype=torch.float64) * 1.5 + 0.3
    mu_a, mu_b = a.mean(0).numpy(), b.mean(0).numpy()
    s_a, s_b = np.cov(a.numpy().T), np.cov(b.numpy().T)
    expected = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(linalg.sqrtm(s_a @ s_b).real)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
