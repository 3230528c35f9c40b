"""Resumable units, config checks and the per-step diagnostics (fast; no training)."""
import pytest
import torch
from pydantic import ValidationError

from benchmarks.exposure_bias import units
from benchmarks.exposure_bias.config import Cell, EvalSpec, converged, full, quick
from benchmarks.exposure_bias.diagnostics import eps_effective, step_errors, variance_error
from training.diffusion import GaussianDiffusion, ScheduleConfig


def test_units_skip_only_for_the_same_fingerprint(tmp_path):
    a, b = units.fingerprint({"x": 1}), units.fingerprint({"x": 2})
    assert a != b and a == units.fingerprint({"x": 1})
    folder = units.fresh(tmp_path / "u", a)
    (folder / "partial.txt").write_text("left by a killed run")
    assert not units.is_done(folder, a)
    units.fresh(folder, a)  # same config: a partial run may resume from what is there
    assert (folder / "partial.txt").exists()
    units.mark_done(folder, a, wall_s=1.0)
    assert units.is_done(folder, a) and not units.is_done(folder, b)
    units.fresh(folder, b)  # another config: stale artefacts are wiped
    assert not (folder / "partial.txt").exists() and not units.is_done(folder, a)


def test_presets_validate_and_bad_configs_fail():
    q, f = quick(), full()
    assert q.preset == "quick" and f.preset == "full"
    assert {v.label for v in f.variants} >= {"ddpm", "ip", "ss", "sdss", "mdss_k4", "sdss_ddim", "mdss_ddim_k4"}
    with pytest.raises(ValidationError, match="1.0"):
        EvalSpec(cells=[Cell(sampler="ddim", steps=5)], num_samples=4, seeds=[0], lambda_grid=[1.01],
                 lambda_samples=4)
    with pytest.raises(ValidationError, match="unknown variants"):
        quick().model_validate({**quick().model_dump(), "curve": {**quick().curve.model_dump(), "labels": ["nope"]}})
    with pytest.raises(ValidationError, match="lambda_labels names unknown variants"):
        quick().model_validate({**quick().model_dump(),
                                "evaluation": {**quick().evaluation.model_dump(), "lambda_labels": ["nope"]}})
    # the thesis' headline cells are in the recorded run
    assert {c.key for c in f.evaluation.cells} >= {"ddim_30", "ddim_100"}
    assert f.scaled_labels() == ["ddpm", "mdss_k4"]
    everything = quick().model_validate({**quick().model_dump(),
                                         "evaluation": {**quick().evaluation.model_dump(), "lambda_labels": None}})
    assert everything.scaled_labels() == [v.label for v in quick().variants]


class _Oracle(torch.nn.Module):
    """The exact ε-predictor for a data set holding one image x0: ε = (x − √ᾱ x0)/√(1−ᾱ)."""

    has_xi = False

    def __init__(self, d: GaussianDiffusion, x0: torch.Tensor):
        super().__init__()
        self.d, self.x0 = d, x0

    def forward(self, x, t):
        return self.d.predict_eps_from_x0(x, t, self.x0.expand_as(x)), None


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_an_exact_model_has_zero_error_on_every_input_kind(sampler):
    torch.manual_seed(0)
    d = GaussianDiffusion.from_config(ScheduleConfig(kind="linear", num_train_timesteps=100))
    x0 = torch.rand(1, 1, 8, 8) * 1.6 - 0.8
    oracle = _Oracle(d, x0)
    rows = step_errors(oracle, d, Cell(sampler=sampler, steps=10), x0.expand(4, -1, -1, -1), seed=0)
    assert {r["kind"] for r in rows} == {"clean", "one_step", "sampled"}
    assert len([r for r in rows if r["kind"] == "clean"]) == 10
    assert max(r["mse"] for r in rows) < 1e-6
    # a biased model is caught on every input kind
    biased = lambda x, t: (oracle(x, t)[0] + 0.1, None)  # noqa: E731
    bad = step_errors(biased, d, Cell(sampler=sampler, steps=10), x0.expand(4, -1, -1, -1), seed=0)
    assert min(r["mse"] for r in bad if r["kind"] == "clean") == pytest.approx(0.01, rel=1e-3)


def test_xi_models_are_scored_through_the_denoised_input():
    d = GaussianDiffusion.from_config(ScheduleConfig(kind="linear", num_train_timesteps=100))
    x = torch.randn(2, 1, 4, 4)
    eps, xi = torch.randn_like(x), 0.1 * torch.randn_like(x)
    model = lambda x_, t_: (eps, xi)  # noqa: E731
    t = 40
    got = eps_effective(model, d, x, t, xi_denoise=True)
    x0_hat = d.predict_x0_from_eps(x - xi, t, eps)
    assert torch.allclose(got, d.predict_eps_from_x0(x, t, x0_hat), atol=1e-6)
    assert torch.allclose(eps_effective(model, d, x, t, xi_denoise=False), eps, atol=1e-5)


def test_variance_error_is_small_for_an_exact_model_of_a_gaussian():
    """Data N(0, s²) per pixel: the exact ε-predictor is linear, and with fine DDIM steps the sampled x_t keep
    q(x_t)'s spread (coarse steps shrink it: DDIM's own discretisation error, so the grid here is the full one)."""
    d = GaussianDiffusion.from_config(ScheduleConfig(kind="linear", num_train_timesteps=500, beta_end=0.04))
    s2 = 0.04  # std 0.2: the x̂₀ clipping of the DDIM scheduler never acts
    ab = torch.tensor(d.alphas_cumprod, dtype=torch.float32)

    def model(x, t):  # E[ε | x_t] for x0 ~ N(0, s²): √(1−ᾱ) x / (ᾱ s² + 1 − ᾱ)
        a = ab[t].reshape(-1, 1, 1, 1)
        return (1 - a).sqrt() * x / (a * s2 + 1 - a), None

    data = torch.randn(2000, 1, 2, 2, generator=torch.Generator().manual_seed(123)) * s2 ** 0.5
    cell = Cell(sampler="ddim", steps=500)
    rows = variance_error(model, d, cell, data, n=2000, seed=0)
    assert len(rows) == 501 and rows[-1]["t"] == -1
    exact = max(abs(r["variance_error"]) for r in rows)
    assert exact < 0.1
    # ε under-estimated by 10 %: the sampled spread ends far from the data's
    scaled = lambda x, t: (0.9 * model(x, t)[0], None)  # noqa: E731
    worse = variance_error(scaled, d, cell, data, n=2000, seed=0)
    assert abs(worse[-1]["variance_error"]) > 2 * exact


def test_the_chain_only_control_has_no_model_error():
    """With the oracle rollout, x̂_t = x_t exactly: only the chain's own effect on the input remains."""
    from benchmarks.exposure_bias.trainer import oracle_rollout
    from training.rollout import RolloutChain

    d = GaussianDiffusion.from_config(ScheduleConfig(kind="linear", num_train_timesteps=100))
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64)
    noise = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 5, 20, 40, 60, 90])
    oracle = oracle_rollout(d)
    x_hat, x_true = RolloutChain(d, 4, "ddpm", "mean").run(oracle, x0, t, noise, model_kwargs={"oracle_x0": x0})
    torch.testing.assert_close(x_hat, x_true, rtol=0, atol=1e-10)


def test_the_converged_preset_has_the_controls_seeds_and_a_two_sided_lambda_grid():
    c = converged()
    labels = {v.label for v in c.variants}
    assert {"ddpm", "ip", "ss", "sdss", "sdss_sample", "mdss_k4", "mdss_k4_sample", "chain_only_k4",
            "mdss_ddim_k4", "mdss_k10"} <= labels
    assert next(v for v in c.variants if v.label == "chain_only_k4").oracle_rollout
    assert len(c.train_seeds) >= 3 and c.image_size == 16 and c.pretrain_curve is not None
    grid = c.evaluation.lambda_grid
    assert min(grid) < 1.0 < max(grid)
    assert {cell.key for cell in c.evaluation.cells} >= {"ddim_30", "ddim_100", "ddpm_30", "dpm2_10"}
    assert set(c.evaluation.k_selection_labels) == {"mdss_k4", "mdss_k10"}
    with pytest.raises(ValidationError, match="oracle_rollout needs"):
        type(c.variants[0]).model_validate({"label": "x", "strategy": {"name": "ddpm"}, "oracle_rollout": True})
    with pytest.raises(ValidationError, match="sample_size"):
        quick().model_validate({**quick().model_dump(), "image_size": 32})


def test_partial_records_resume_and_a_torn_last_line_is_redone(tmp_path):
    calls = []

    def compute(v):
        return lambda: calls.append(v) or v * 1.5

    records = units.PartialRecords(tmp_path)
    assert [records.get(k, compute(v)) for k, v in (("a", 1), ("b", 2))] == [1.5, 3.0]
    assert records.get("a", compute(99)) == 1.5 and calls == [1, 2]  # recorded: not computed again
    # a kill in the middle of the next write leaves a torn last line: that one result is redone
    with records.path.open("a") as fh:
        fh.write('{"key": "c", "val')
    resumed = units.PartialRecords(tmp_path)
    assert resumed.values == {"a": 1.5, "b": 3.0}
    assert resumed.get("c", compute(3)) == 4.5 and calls == [1, 2, 3]
    assert units.PartialRecords(tmp_path).values == {"a": 1.5, "b": 3.0, "c": 4.5}
    # damage anywhere else is not a kill: it is refused, naming the file and the line
    lines = records.path.read_text().splitlines(keepends=True)
    records.path.write_text(lines[0] + "not json\n" + lines[2])
    with pytest.raises(ValueError, match=r"PARTIAL\.jsonl: line 2"):
        units.PartialRecords(tmp_path)


def test_a_partial_record_whose_write_fails_is_cut_back_and_the_unit_goes_on(tmp_path, monkeypatch):
    """A write that fails without a kill (disk full) must not leave its fragment for the next record to glue onto:
    the records go through core.durable_files' append, which cuts a failed write back."""
    import os

    records = units.PartialRecords(tmp_path)
    records.get("a", lambda: 1.0)
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError, match="No space"):
        records.get("b", lambda: 2.0)
    monkeypatch.undo()
    assert "b" not in records.values  # not recorded, so a later get computes it again
    records.get("c", lambda: 3.0)
    assert units.PartialRecords(tmp_path).values == {"a": 1.0, "c": 3.0}
