"""benchmarks.mixture_bias --quick end to end (CPU, offline; a smoke test, not a result): every unit runs and
writes its JSON, the report has one row per sampler × steps × method over both seeds, a rerun skips every unit,
pretraining passes its convergence check, and DDPM sampling with the most steps brings the 2-D ring's sliced W2
down to the floor of true samples of the same size."""
import json

import pytest
import torch

from benchmarks.mixture_bias.__main__ import main
from benchmarks.mixture_bias.config import mixture_for, quick
from benchmarks.mixture_bias.contrasts import contrast_pairs
from training.metrics.mixture import mixture_distance

pytestmark = pytest.mark.slow  # ~50 s on 2 shared cores


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("mixture_bias") / "work"
    assert main(["--quick", "--work", str(work)]) == 0
    return work


def test_units_and_rerun_skips(quick_run, capsys):
    cfg = quick()
    methods = cfg.method_table()
    finetuned = [m for m in methods if m.strategy is not None]
    assert len(list((quick_run / "pretrain").glob("*.json"))) == len(cfg.seeds)
    assert len(list((quick_run / "finetune").glob("*.json"))) == len(cfg.seeds) * len(finetuned)
    assert len(list((quick_run / "eval").glob("*.json"))) == len(cfg.seeds) * len(methods)
    capsys.readouterr()
    assert main(["--quick", "--work", str(quick_run)]) == 0
    assert "(0 units run," in capsys.readouterr().out


def test_pretraining_converged(quick_run):
    for p in (quick_run / "pretrain").glob("*.json"):
        rec = json.loads(p.read_text())
        assert len(rec["loss_curve"]) >= 8
        assert rec["converged"], (p.name, rec["last_quarter_rel_improvement"])


def test_report_structure(quick_run):
    cfg = quick()
    res = json.loads((quick_run / "report" / "results.json").read_text())
    rows = res["rows"]
    keys = {(r["sampler"], r["steps"], r["method"]) for r in rows}
    assert keys == {(s, n, m.label) for s in cfg.samplers for n in cfg.steps for m in cfg.method_table()}
    for r in rows:
        assert r["dim"] == 2 and r["n_seeds"] == len(cfg.seeds)
        assert all(map(lambda v: v == v and abs(v) < float("inf"), (r["nll_mean"], r["sw2_mean"])))
        if r["method"] != "ddpm":
            assert "sw2_diff_vs_ddpm" in r and len(r["sw2_diff_ci"]) == 2
        if r["method"] == "eps_scale":
            assert all(lam in cfg.lambda_grid for lam in r["eps_scale_chosen"])
        if r["method"] != "ddpm":
            assert r["sw2_verdict"] in ("better", "worse", "inconclusive") and r["sw2_mde"] > 0
            lo, hi = r["sw2_diff_ci"]
            assert r["sw2_verdict"] == ("better" if hi < 0 else "worse" if lo > 0 else "inconclusive")
            if r["sw2_p"] == r["sw2_p"]:  # FDR-adjusted over the D's cells (no p when every seed's Δ is 0)
                assert 0.0 <= r["sw2_q"] <= 1.0 and r["sw2_q"] >= r["sw2_p"]
            else:
                assert r["sw2_q"] != r["sw2_q"]
    assert sorted(p.name for p in (quick_run / "report").glob("fig_gap_*.png")) == ["fig_gap_d2_ddim.png", "fig_gap_d2_ddpm.png"]
    assert sorted(p.name for p in (quick_run / "report").glob("fig_exposure_gap_*.png")) == [
        "fig_exposure_gap_d2_ddim.png", "fig_exposure_gap_d2_ddpm.png"]
    md = (quick_run / "report" / "results.md").read_text()
    assert "## Verdicts" in md and "MDE" in md and "## Summary" in md and "## The controls" in md
    # every control pair in every cell, paired over both seeds, consistent with the vs-DDPM rows' inputs
    pairs = res["contrasts"]
    assert {(r["first"], r["second"]) for r in pairs} == {p[:2] for p in contrast_pairs(cfg.k)}
    assert len(pairs) == len(contrast_pairs(cfg.k)) * len(cfg.samplers) * len(cfg.steps)
    by = {(r["sampler"], r["steps"], r["method"]): r for r in rows}
    for r in pairs:
        assert r["n_seeds"] == len(cfg.seeds)
        a, b = by[(r["sampler"], r["steps"], r["first"])], by[(r["sampler"], r["steps"], r["second"])]
        assert abs(r["sw2"]["diff"] - (a["sw2_mean"] - b["sw2_mean"])) < 1e-9  # same seeds: difference of means
        assert f"| {r['first']} − {r['second']} |" in md
    assert "Smoke test" in md and "chain_only_k2" in md and "mdss_ddim_k2" in md


def test_ddpm_sampling_reaches_the_floor(quick_run):
    cfg = quick()
    res = json.loads((quick_run / "report" / "results.json").read_text())
    floor = res["floors"]["2"]
    row = next(r for r in res["rows"] if (r["sampler"], r["steps"], r["method"]) == ("ddpm", max(cfg.steps), "ddpm"))
    # a clearly wrong distribution of the same size (the ring's moment-matched Gaussian) for scale
    mix = mixture_for(2)
    wrong = torch.randn(cfg.num_eval, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * (2 / 2 ** 0.5)
    wrong_sw2 = mixture_distance(wrong, mix, seed=7_001, num_projections=cfg.num_projections,
                                 reference_size=cfg.reference_size)
    assert row["sw2_mean"] < 1.5 * floor["sw2_max"], (row["sw2_mean"], floor)
    assert row["sw2_mean"] < 0.5 * wrong_sw2, (row["sw2_mean"], wrong_sw2)
    # fewer steps are no better than the floor either (sanity of the floor itself)
    assert floor["sw2"] <= min(r["sw2_mean"] for r in res["rows"] if r["method"] == "ddpm") * 1.5
