"""Issue #28's protocol additions, without training: the decisive controls as variants and rows, six training seeds
that reuse the 3-seed run's units (and the running pretraining's), the held-out selection scores, the exact
sign-flip p, and control verdicts read from the pre-specified rows only."""
import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from benchmarks.exposure_bias import timing
from benchmarks.exposure_bias.__main__ import main
from benchmarks.exposure_bias.config import PROBE_LAMBDAS, SIX_SEED_LABELS, ProtocolConfig, converged, quick
from benchmarks.exposure_bias.protocol import Protocol
from benchmarks.exposure_bias.seed_stats import (CHAIN_HELD_OUT, CONTROLS_FAMILY, EPS_EXT, HELD_OUT_K, HELD_OUT_K_EPS,
                                                 PRESPECIFIED, PRESPECIFIED_FAMILY, PRESPECIFIED_ROWS,
                                                 methods, training_seed_section)
from benchmarks.exposure_bias.verdicts import CONTROL_CLAIMS, control_verdicts, judge_control
from benchmarks.paired_stats import benjamini_hochberg, mde_factors

ROOT = Path(__file__).resolve().parents[2]

# The fingerprints of the converged preset's shared units, computed from the code at commit e840f7a (from which the
# pretraining in the long-running work folder was started; benchmarks/ was unchanged from e840f7a to the commit
# before issue #28's edits, where these were recorded). Its feature_net/DONE.json holds da2cf3fb1240525b and its
# models/pretrained/STARTED.json 4c888c68b50b2a04. If one of these changes, that pretraining is redone from scratch.
E840F7A = {"feature_net": "da2cf3fb1240525b", "pretrain": "4c888c68b50b2a04", "pretrain_extendable": "f44e83609952239c",
           "metric": "7032e79df5e91c67", "noise_floor": "98ab50c4bb5230b0", "pretrain_curve": "3039737f48fb4d08"}


@pytest.mark.parametrize("seeds", [3, 6])
def test_the_shared_units_keep_the_fingerprints_and_folders_of_e840f7a(seeds, tmp_path, monkeypatch):
    p = Protocol(converged(seeds), tmp_path / "work", tmp_path / "out", log=lambda *_: None)
    assert {stage: p.fp(stage) for stage in E840F7A} == E840F7A
    made = []
    monkeypatch.setattr(p, "_unit", lambda folder, fp, what, body: made.append((folder, fp)))
    p.run(("feature_net", "pretrain"))
    assert made == [(tmp_path / "work" / "feature_net", E840F7A["feature_net"]),
                    (tmp_path / "work" / "models" / "pretrained", E840F7A["pretrain"])]


def test_the_pinned_fingerprints_are_what_the_code_of_e840f7a_computes(tmp_path):
    """The pins above, recomputed from benchmarks/ as it was at e840f7a (the rest of the tree as it is now)."""
    import os
    import subprocess
    import sys

    probe = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", "e840f7a^{commit}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("git or commit e840f7a not available (shallow clone?)")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "e840f7a", "benchmarks"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive, check=True)
    code = ("import json; from benchmarks.exposure_bias.config import converged; "
            "from benchmarks.exposure_bias.protocol import Protocol; p = Protocol(converged(), '/nonexistent', "
            f"'/nonexistent'); print(json.dumps({{s: p.fp(s) for s in {sorted(E840F7A)!r}}}))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         check=True).stdout
    assert json.loads(out) == E840F7A


def test_six_seeds_reuse_every_unit_of_the_three_seed_run(tmp_path):
    three, six = (Protocol(converged(n), tmp_path, tmp_path) for n in (3, 6))
    for v in three.cfg.variants:
        for seed in (0, 1, 2):
            for stage in ("finetune", "evaluate") + (("lambda",) if v.label in three.cfg.searched_labels() else ()):
                assert three.fp(stage, v, seed) == six.fp(stage, v, seed), (stage, v.label, seed)
    assert {v.label for s, v in six.seeded_variants() if s >= 3} == set(SIX_SEED_LABELS)
    assert [s for s, _ in three.seeded_variants()] == [s for s, _ in six.seeded_variants()][:3 * len(three.variants)]
    v = next(v for v in six.cfg.variants if v.label == "mdss_k10")
    assert six.unit_dir("models", v, 4) == tmp_path / "models" / "mdss_k10" / "s4"
    assert len({six.fp("finetune", v, s) for s in range(6)}) == 6  # new seeds are new units
    # the headline cells are the preset's cells: the extra seeds run on all of them
    assert {c.key for c in six.cfg.evaluation.cells} == {"ddpm_30", "ddim_10", "ddim_30", "ddim_100", "dpm2_10"}


def test_the_stages_run_the_extra_seeds_of_their_variants_only(tmp_path, monkeypatch):
    p = Protocol(converged(6), tmp_path, tmp_path, log=lambda *_: None)
    made = []
    monkeypatch.setattr(p, "_unit", lambda folder, fp, what, body: made.append(what))
    monkeypatch.setattr(p, "_require", lambda *a: None)
    p.stage_finetune()
    assert len(made) == 12 * 3 + 5 * 3 and "finetune chain_only_k10 s5" in made and "finetune ip s3" not in made
    made.clear()
    p.stage_lambda()
    assert made == [f"lambda {lab} s{s}" for s in range(6) for lab in ("ddpm", "mdss_k4", "mdss_k10")]


def test_the_decisive_controls_are_variants_and_held_out_chosen_rows():
    c = converged()
    chain = next(v for v in c.variants if v.label == "chain_only_k10")
    mdss = next(v for v in c.variants if v.label == "mdss_k10")
    assert chain.oracle_rollout and chain.strategy == mdss.strategy and chain.strategy.k == 10
    assert c.chain_only_for("mdss_k4") == "chain_only_k4" and c.chain_only_for("mdss_k10") == "chain_only_k10"
    assert c.chain_only_for("mdss_k4_sample") is None and c.chain_only_for("chain_only_k4") is None
    # MDSS + ε-scaling: both k candidates get the same λ search as the DDPM fine-tune
    ev = c.evaluation
    assert c.scaled_labels() == ["ddpm", "mdss_k4", "mdss_k10"] and ev.k_selection_labels == ["mdss_k4", "mdss_k10"]
    grid = c.lambda_grid_for("ddpm")
    assert grid == c.lambda_grid_for("mdss_k4") == sorted(set(ev.lambda_grid) | set(PROBE_LAMBDAS))
    assert c.lambda_grid_for("ip") == [1.0]
    # the extended grid is the side probe's: the λ lambda_probe.json scored past the preset grid
    probe = json.loads((ROOT / "docs" / "exposure_bias_converged" / "lambda_probe.json").read_text())
    assert sorted({r["lambda"] for r in probe["rows"]}) == PROBE_LAMBDAS
    rows = {name: (setting, selected) for name, _, setting, selected in methods(c)}
    assert rows[HELD_OUT_K] == ("off", True) and rows[CHAIN_HELD_OUT] == ("off", True)
    assert rows[HELD_OUT_K_EPS] == ("eps_scaled_ext", True) and rows[EPS_EXT] == ("eps_scaled_ext", False)
    assert rows["ddpm + ε-scaling"] == ("eps_scaled", False)  # the preset grid's row, as before issue #28
    # the chain-only row follows the held-out k choice of MDSS
    pick = next(f for name, f, _, _ in methods(c) if name == CHAIN_HELD_OUT)
    assert pick(0, "ddim_10", {(0, "ddim_10"): "mdss_k10"}) == "chain_only_k10" and pick(1, "ddim_10", {}) is None


def test_extra_seeds_are_checked():
    q = quick().model_dump()
    bad = {"ddpm missing": {"seeds": [2], "labels": ["mdss_k4", "mdss_k2"]},
           "one k candidate": {"seeds": [2], "labels": ["ddpm", "mdss_k4"]},
           "reused seed": {"seeds": [1], "labels": ["ddpm"]},
           "unknown": {"seeds": [2], "labels": ["ddpm", "nope"]}}
    for why, extra in bad.items():
        with pytest.raises(ValidationError):
            ProtocolConfig.model_validate({**q, "extra_seeds": extra})
    with pytest.raises(ValidationError, match="lambda_grid_extended"):
        ProtocolConfig.model_validate({**q, "evaluation": {**q["evaluation"], "lambda_grid_extended": [1.0]}})
    with pytest.raises(ValueError, match="3 or 6"):
        converged(4)


def test_the_cli_has_six_seeds_for_the_converged_preset_only(capsys):
    assert main(["--converged", "--seeds", "6", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["extra_seeds"] == {"seeds": [3, 4, 5], "labels": SIX_SEED_LABELS}
    assert main(["--quick", "--seeds", "6", "--print-config"]) == 2
    assert "--seeds goes with --converged" in capsys.readouterr().err


# ---------------------------------------------------------------- the report layer on synthetic scores
def _six_seed_quick() -> ProtocolConfig:
    q = quick()
    return ProtocolConfig.model_validate({**q.model_dump(), "extra_seeds": {
        "seeds": [2], "labels": ["ddpm", "mdss_k4", "mdss_k2", "chain_only_k4", "chain_only_k2"]}})


def _synthetic_run(cfg: ProtocolConfig, work: Path) -> list[dict]:
    """Scores and held-out searches as the stages would write them: MDSS k = 4 wins the held-out split at every
    cell but ddpm_4 (k = 2 there), the extended grid picks 1.05 for MDSS and the preset grid 1.01."""
    rng = np.random.default_rng(1)
    ev = cfg.evaluation
    shift = {"ddpm": 0.0, "mdss_k4": -0.1, "mdss_k2": -0.05, "chain_only_k4": -0.08, "chain_only_k2": -0.04}
    rows = []
    for v in cfg.variants:
        settings = {"off": 0.0}
        if v.label in cfg.scaled_labels():
            settings.update(eps_scaled=-0.02, eps_scaled_ext=-0.03 if v.label != "ddpm" else -0.02)
        for t in cfg.seeds_for(v.label):
            for cell in ev.cells:
                for setting, extra in settings.items():
                    for s in ev.seeds:
                        rows.append(dict(variant=v.label, setting=setting, sampler=cell.sampler, steps=cell.steps,
                                         train_seed=t, seed=s, score=1.0 + shift.get(v.label, 0.01) + extra
                                         + 0.03 * rng.standard_normal()))
    for label in cfg.searched_labels():
        for t in cfg.seeds_for(label):
            choice = {}
            for cell in ev.cells:
                grid = cfg.lambda_grid_for(label)
                held = {str(lam): 0.5 + abs(lam - (1.05 if label != "ddpm" else 1.01)) for lam in grid}
                if label == "mdss_k2":
                    held["1.0"] = 0.4 if cell.key == "ddpm_4" else 0.9
                preset = {k: s for k, s in held.items() if float(k) in ev.lambda_grid}
                choice[cell.key] = {"lambda": float(min(preset, key=preset.get)), "val_scores": held}
                if label in cfg.scaled_labels():
                    choice[cell.key]["lambda_extended"] = float(min(held, key=held.get))
            f = work / "lambda" / label / f"s{t}" / "lambda.json"
            f.parent.mkdir(parents=True)
            f.write_text(json.dumps(choice))
    return rows


def _csv(path):
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory):
    cfg, root = _six_seed_quick(), tmp_path_factory.mktemp("syn")
    rows = _synthetic_run(cfg, root / "work")
    md = training_seed_section(cfg, root / "work", rows, root)
    return cfg, root, rows, "\n".join(md)


def test_the_held_out_selection_scores_are_written(synthetic_report):
    cfg, root, _, md = synthetic_report
    held = _csv(root / "held_out_selection.csv")
    assert "held_out_selection.csv" in md
    ev = cfg.evaluation
    # every λ of every searched variant, seed and cell
    want = sum(len(cfg.lambda_grid_for(lab)) * len(cfg.seeds_for(lab)) for lab in cfg.searched_labels()) * len(ev.cells)
    assert len(held) == want
    ddpm = [r for r in held if r["variant"] == "ddpm" and r["train_seed"] == "2" and r["sampler"] == "ddim" and r["steps"] == "4"]
    assert {float(r["lambda"]) for r in ddpm} == set(ev.lambda_grid) | set(ev.lambda_grid_extended)
    assert [float(r["lambda"]) for r in ddpm if r["lambda_chosen"] == "True"] == [1.01]
    assert [float(r["lambda"]) for r in ddpm if r["lambda_chosen_extended"] == "True"] == [1.01]
    assert {r["in_preset_grid"] for r in ddpm if float(r["lambda"]) == 1.05} == {"False"}
    k4 = [r for r in held if r["variant"] == "mdss_k4" and r["train_seed"] == "0" and r["sampler"] == "ddim"]
    assert [float(r["lambda"]) for r in k4 if r["lambda_chosen_extended"] == "True"] == [1.05] * 2
    # the k choice: at λ = 1 only, k = 2 at ddpm_4 and k = 4 elsewhere
    k_rows = [r for r in held if r.get("k_chosen") not in ("", None)]
    assert {float(r["lambda"]) for r in k_rows} == {1.0}
    for r in k_rows:
        k2_wins = (r["sampler"], r["steps"]) == ("ddpm", "4")
        assert (r["k_chosen"] == "True") == ((r["variant"] == "mdss_k2") == k2_wins)


def test_the_headline_has_the_controls_six_seeds_and_the_exact_columns(synthetic_report):
    cfg, root, _, _ = synthetic_report
    head = _csv(root / "headline.csv")
    by = {(r["method"], r["sampler"], int(r["steps"])): r for r in head}
    for name in (HELD_OUT_K, HELD_OUT_K_EPS, CHAIN_HELD_OUT, EPS_EXT, "ddpm", "mdss_k2"):
        assert by[(name, "ddim", 4)]["n_train_seeds"] == "3", name
    assert by[("ip", "ddim", 4)]["n_train_seeds"] == "2"  # paired with the baseline on its own two seeds
    assert json.loads(by[(CHAIN_HELD_OUT, "ddpm", 4)]["k_chosen"]) == {"0": "chain_only_k2", "1": "chain_only_k2",
                                                                      "2": "chain_only_k2"}
    assert json.loads(by[(HELD_OUT_K_EPS, "ddim", 8)]["k_chosen"]) == {"0": "mdss_k4", "1": "mdss_k4", "2": "mdss_k4"}
    # a selected row that picked one variant everywhere is that variant's row: the same numbers and the same q
    assert by[(CHAIN_HELD_OUT, "ddim", 8)]["mean"] == by[("chain_only_k4", "ddim", 8)]["mean"]
    assert by[(HELD_OUT_K_EPS, "ddim", 8)]["q"] == by["mdss_k4 + ε-scaling (extended λ grid)", "ddim", 8]["q"]
    for r in head:
        if r["method"] == "ddpm":
            continue
        n = int(r["n_train_seeds"])
        approx, exact = mde_factors(n)
        assert math.isclose(float(r["mde_exact"]), float(r["mde"]) * exact / approx, rel_tol=1e-12)
        assert float(r["p_sign_flip"]) * 2 ** n in range(2, 2 ** n + 1)  # a multiple of 1/2ⁿ, at least 2/2ⁿ


def test_the_pre_specified_contrasts_form_their_own_family(synthetic_report):
    cfg, root, _, md = synthetic_report
    con = _csv(root / "contrasts.csv")
    pre = [r for r in con if r["family"] == PRESPECIFIED_FAMILY]
    assert {(r["first"], r["second"]) for r in pre} == {(a, b) for a, b, _ in PRESPECIFIED}
    assert len(pre) == len(PRESPECIFIED) * len(cfg.evaluation.cells) and all(r["n_train_seeds"] == "3" for r in pre)
    assert {r["first"] for r in con if r["family"] == CONTROLS_FAMILY} >= {"chain_only_k4/off", "chain_only_k2/off"}
    for fam in (PRESPECIFIED_FAMILY, CONTROLS_FAMILY):
        rows = [r for r in con if r["family"] == fam]
        assert np.allclose([float(r["q"]) for r in rows], benjamini_hochberg([float(r["p"]) for r in rows]))
    assert "#### Pre-specified control contrasts (issue #28)" in md
    # the verdicts read these rows, and only these
    got = control_verdicts(_csv(root / "headline.csv"), con)
    assert len(got) == len(CONTROL_CLAIMS) * len(cfg.evaluation.cells)
    assert all(r["q_family"].endswith(PRESPECIFIED_FAMILY) for r in got)


def test_control_verdicts_use_the_pre_specified_rows_only():
    for _, first, second, ref in CONTROL_CLAIMS:
        assert {first, second, ref} <= set(PRESPECIFIED_ROWS)
        assert (first, second) in {(a, b) for a, b, _ in PRESPECIFIED}
    head = [{"method": HELD_OUT_K, "sampler": "ddpm", "steps": "30", "diff_vs_ddpm": "-0.1"}]
    row = dict(first=CHAIN_HELD_OUT, second=HELD_OUT_K, sampler="ddpm", steps="30", diff="0.01", ci_low="-0.02",
               ci_high="0.04", mde="0.03", mde_exact="0.031", p="0.4", p_sign_flip="0.5", q="0.6", n_train_seeds="6")
    # a post hoc row of the same contrast, a discovery, and a fixed-k control: never read
    posthoc = dict(row, diff="-0.2", q="0.001", family="post hoc")
    fixed_k = dict(row, first="chain_only_k10/off", second="mdss_k10/off", q="0.001", family=CONTROLS_FAMILY)
    (got,) = control_verdicts(head, [posthoc, fixed_k, dict(row, family=PRESPECIFIED_FAMILY)])
    assert got["diff"] == 0.01 and got["reference_gain"] == pytest.approx(0.1)
    assert got["verdict"] == "no difference as large as the reference gain"
    assert control_verdicts(head, [posthoc, fixed_k]) == []  # a report from before issue #28: none


def test_the_control_verdict_rules():
    assert judge_control(-0.05, -0.08, -0.02, 0.03, 0.01, 0.1) == "first better (a discovery)"
    assert judge_control(0.05, 0.02, 0.08, 0.03, 0.01, 0.1) == "second better (a discovery)"
    assert judge_control(0.0, -0.2, 0.2, 0.12, 0.9, 0.1) == "inconclusive (underpowered)"
    assert judge_control(0.0, -0.05, 0.05, 0.06, 0.9, 0.1) == "no difference as large as the reference gain"
    assert judge_control(0.05, -0.01, 0.11, 0.06, 0.3, 0.1) == "inconclusive"
    assert judge_control(0.0, -0.05, 0.05, 0.06, 0.9, -0.02).startswith("inconclusive (the reference row")
    assert judge_control(0.0, -0.05, 0.05, 0.06, math.nan, 0.1) == "n/a (no test)"


# ---------------------------------------------------------------- the six-seed plan
def test_the_budget_counts_each_variants_seeds_and_the_script_runs_every_variant():
    costs = {"pretrain_step_s": 0.126, "finetune_step_s": 0.144, "nfe_per_image_s": 0.000681}
    three, six = timing.budget(converged(3), costs), timing.budget(converged(6), costs)
    runs = lambda b: next(int(re.search(r"\((\d+) runs", k).group(1)) for k in b["parts_s"] if "runs" in k)  # noqa: E731
    assert runs(three) == 12 * 3 and runs(six) == 12 * 3 + 5 * 3
    assert six["total_s"] > three["total_s"] and three["parts_s"]["pretrain"] == six["parts_s"]["pretrain"]
    groups = timing.balanced_groups(six["variants_s"])
    assert sorted(sum(groups, [])) == sorted(v.label for v in converged(6).variants)
    # the committed scripts' two groups: disjoint, every variant of the preset, the six-seed one as balanced
    for name, seeds in (("exposure_bias_converged.sh", 3), ("exposure_bias_six_seeds.sh", 6)):
        script = (ROOT / "scripts" / name).read_text()
        assert ("--converged --seeds 6" in script) == (seeds == 6)
        picked = [re.findall(r"--variant (\w+)", "\n".join(g)) for g in _groups(script)]
        assert len(picked) == 2 and not set(picked[0]) & set(picked[1]), name
        assert sorted(picked[0] + picked[1]) == sorted(v.label for v in converged(seeds).variants), name
        if seeds == 6:
            assert sorted(map(sorted, picked)) == sorted(map(sorted, groups))


def _groups(script: str) -> list[list[str]]:
    """The script's group A and group B command lines (a command runs to its `&`)."""
    out, current = [], []
    for line in script.splitlines():
        if "--variant" in line or current:
            current.append(line)
            if line.rstrip().endswith("&"):
                out.append(current)
                current = []
    return out


def test_the_old_side_probe_is_never_paired_with_a_report_of_the_new_protocol():
    from benchmarks.exposure_bias.verdicts import PROBE, Committed, posthoc_contrasts

    data = Committed(ROOT / "docs" / "exposure_bias_converged")
    assert any(PROBE in (r["first"], r["second"]) for r in posthoc_contrasts(data, 200))
    data.headline = data.headline + [{"method": EPS_EXT, "sampler": "ddpm", "steps": "30"}]
    assert not any(PROBE in (r["first"], r["second"]) for r in posthoc_contrasts(data, 200))


# ---------------------------------------------------------------- joint tests over cells
class _JointData:
    """Scores of the rows the joint tests read, per cell, training seed and sampling seed: the DDPM fine-tune at
    1.0 (+ a per-training-seed offset shared by every method and cell, as a fine-tune's quality is), the others
    at a relative change ``rel`` plus noise of sd ``sd`` per training seed and cell."""

    folder = Path("synthetic")

    def __init__(self, rel: dict, sd: float, seeds: int = 6, base: dict | None = None):
        from benchmarks.exposure_bias.verdicts import HEADLINE_CELLS

        rng = np.random.default_rng(3)
        raw = 0.2 * rng.standard_normal(seeds)
        offset = dict(enumerate(raw - raw.mean()))  # mean 0: the DDPM fine-tune's mean stays at the base
        self.s = {}
        for cell in HEADLINE_CELLS:
            b = (base or {}).get(cell, 1.0)
            for name in ("ddpm", *rel):
                r = rel.get(name, 0.0)
                self.s[(name, *cell)] = {t: {s: b * (1 + r) + offset[t] + (sd * rng.standard_normal() if name != "ddpm"
                                                                          else 0.0) + 0.001 * s for s in range(2)}
                                         for t in range(seeds)}

    def series(self, name, sampler, steps):
        return self.s[(name, sampler, steps)]

    def mean(self, name, sampler, steps):
        return float(np.mean([np.mean(list(v.values())) for v in self.s[(name, sampler, steps)].values()]))


def test_the_joint_value_is_a_mean_over_cells_per_training_seed_by_hand():
    from benchmarks.exposure_bias.verdicts import joint_relative

    class D:
        def series(self, name, sampler, steps):
            return {("a", "x", 1): {0: {0: 0.9, 1: 0.7}, 1: {0: 1.0, 1: 1.0}},
                    ("b", "x", 1): {0: {0: 1.0, 1: 1.0}, 1: {0: 1.0, 1: 1.2}},
                    ("a", "y", 2): {0: {0: 2.0, 1: 2.0}, 1: {0: 1.5, 1: 1.5}, 2: {0: 9.0}},
                    ("b", "y", 2): {0: {0: 2.0, 1: 2.0}, 1: {0: 2.0, 1: 2.0}, 2: {0: 1.0}},
                    ("ddpm", "x", 1): {0: {0: 1.0}}, ("ddpm", "y", 2): {0: {0: 2.0}}}[(name, sampler, steps)]

        def mean(self, name, sampler, steps):
            return {"x": 1.0, "y": 2.0}[sampler]

    got = joint_relative(D(), "a", "b", [("x", 1), ("y", 2)])
    # seed 0: cell x −0.2 / 1, cell y 0; seed 1: x −0.1 / 1, y −0.5 / 2; seed 2 lacks cell x: left out
    assert got == pytest.approx({0: (-0.2 + 0.0) / 2, 1: (-0.1 - 0.25) / 2})


def test_the_joint_tests_judge_by_training_seed_and_move_with_the_effect():
    from benchmarks.exposure_bias.verdicts import JOINT, joint_verdicts

    # MDSS 30 % better in every cell, small noise: the thesis-sized claim is reproduced, with n = training seeds
    got = joint_verdicts(_JointData({HELD_OUT_K: -0.3, CHAIN_HELD_OUT: -0.3, EPS_EXT: -0.3}, sd=0.01), 500)
    assert [r["claim"] for r in got] == [c[0] for c in JOINT]
    mdss, chain, eps = got
    assert mdss["n_train_seeds"] == 6 and mdss["size"] == pytest.approx(np.mean([-0.291, -0.297, -0.226]), abs=1e-3)
    assert mdss["diff"] == pytest.approx(-0.3, abs=0.01) and mdss["verdict"] == "reproduced"
    assert mdss["thesis_size_in_ci"] is False  # −30 % measured tightly: larger than the thesis' −27.1 %
    at_size = joint_verdicts(_JointData({HELD_OUT_K: -0.271, CHAIN_HELD_OUT: -0.3, EPS_EXT: -0.3}, sd=0.01), 500)[0]
    assert at_size["verdict"] == "reproduced" and at_size["thesis_size_in_ci"] is True
    assert mdss["p_sign_flip"] == pytest.approx(2 / 2 ** 6)
    # the controls: as large a gain as MDSS's, measured precisely: no difference as large as MDSS's gain
    assert chain["size"] == pytest.approx(0.3, abs=0.01)
    assert chain["verdict"] == eps["verdict"] == "no difference as large as the reference gain"
    # no gain at all, measured precisely: not reproduced; the same with large noise: underpowered
    assert joint_verdicts(_JointData({HELD_OUT_K: 0.0, CHAIN_HELD_OUT: 0.0, EPS_EXT: 0.0}, sd=0.01), 500)[0][
        "verdict"] == "not reproduced"
    noisy = joint_verdicts(_JointData({HELD_OUT_K: -0.1, CHAIN_HELD_OUT: -0.1, EPS_EXT: -0.1}, sd=0.6), 500)
    assert noisy[0]["verdict"] == "inconclusive (underpowered)"
    # the chain far better than MDSS: a discovery for the first row
    assert joint_verdicts(_JointData({HELD_OUT_K: -0.1, CHAIN_HELD_OUT: -0.4, EPS_EXT: -0.1}, sd=0.01), 500)[1][
        "verdict"] == "first better (a discovery)"


def test_cells_on_other_scales_count_alike_in_the_joint_value():
    """Relative differences: a cell whose scores are 10× larger does not outweigh the others."""
    from benchmarks.exposure_bias.verdicts import joint_verdicts

    plain = joint_verdicts(_JointData({HELD_OUT_K: -0.2, CHAIN_HELD_OUT: -0.2, EPS_EXT: -0.2}, sd=0.001), 200)[0]
    scaled = joint_verdicts(_JointData({HELD_OUT_K: -0.2, CHAIN_HELD_OUT: -0.2, EPS_EXT: -0.2}, sd=0.001,
                                       base={("ddim", 100): 10.0}), 200)[0]
    assert plain["diff"] == pytest.approx(-0.2, abs=0.03) and scaled["diff"] == pytest.approx(-0.2, abs=0.03)
