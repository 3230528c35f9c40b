"""Issue #28: one test enters the false-discovery family once, and the verdicts drawn from the committed converged
report (benchmarks/exposure_bias/verdicts.py) are what its files give."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.exposure_bias.config import converged, quick
from benchmarks.exposure_bias.seed_stats import _add_q_values, paired_difference, summarise
from benchmarks.exposure_bias.verdicts import (HELD_OUT_K, PROBE, Committed, judge, posthoc_contrasts,
                                               verdicts)
from benchmarks.paired_stats import benjamini_hochberg

DOCS = Path(__file__).resolve().parents[2] / "docs" / "exposure_bias_converged"


def test_a_repeated_test_enters_the_family_once_and_shares_its_q():
    rows = [{"p": 0.01}, {"p": 0.04}, {"p": 0.01}, {}]
    _add_q_values(rows, ["a", "b", "a", "c"])
    # family {0.01, 0.04}: q 0.02 and 0.04; counted twice it would be 0.015, 0.04, 0.015
    assert np.allclose([rows[0]["q"], rows[1]["q"], rows[2]["q"]], [0.02, 0.04, 0.02]) and "q" not in rows[3]
    plain = [{"p": 0.01}, {"p": 0.04}, {"p": 0.01}]
    _add_q_values(plain)  # without keys every row is its own test, as before
    assert np.allclose([r["q"] for r in plain], [0.015, 0.04, 0.015])


def test_k_by_held_out_that_picked_one_k_everywhere_shares_that_rows_q(tmp_path):
    cfg = quick()
    cell = cfg.evaluation.cells[0]
    rng = np.random.default_rng(0)
    rows = []
    for label, shift in (("ddpm", 0.0), ("mdss_k4", -0.1), ("mdss_k2", 0.05), ("ss", -0.02)):
        for t in cfg.train_seeds:
            for s in (0, 1):
                rows.append(dict(variant=label, setting="off", sampler=cell.sampler, steps=cell.steps, train_seed=t,
                                 seed=s, score=1.0 + shift + 0.03 * rng.standard_normal()))
    for label, held in (("mdss_k4", 0.5), ("mdss_k2", 0.7)):  # mdss_k4 wins the held-out split in every seed
        for t in cfg.train_seeds:
            f = tmp_path / "lambda" / label / f"s{t}" / "lambda.json"
            f.parent.mkdir(parents=True)
            f.write_text(json.dumps({cell.key: {"val_scores": {"1.0": held}}}))
    out = {r["method"]: r for r in summarise(cfg, tmp_path, rows)}
    assert set(out[HELD_OUT_K]["k_chosen"].values()) == {"mdss_k4"}
    assert out[HELD_OUT_K]["q"] == out["mdss_k4"]["q"]
    tests = [out[m]["p"] for m in ("mdss_k4", "mdss_k2", "ss")]  # the family: three tests, not four
    assert np.allclose([out[m]["q"] for m in ("mdss_k4", "mdss_k2", "ss")], benjamini_hochberg(tests))


def test_the_verdict_rules():
    # a discovery in the thesis' direction is reproduced, the other way not
    assert judge(-0.1, -0.08, -0.12, -0.04, 0.2, 0.01) == "reproduced"
    assert judge(-0.1, 0.08, 0.04, 0.12, 0.02, 0.01).startswith("not reproduced")
    # no discovery: an MDE at or above the thesis-sized effect cannot tell; a CI without it and a smaller MDE can
    assert judge(-0.1, -0.02, -0.12, 0.08, 0.1, 0.5) == "inconclusive (underpowered)"
    assert judge(-0.1, 0.0, -0.05, 0.05, 0.06, 0.9) == "not reproduced"
    assert judge(0.1, 0.0, -0.05, 0.05, 0.06, 0.9) == "not reproduced"
    assert judge(-0.1, -0.06, -0.11, -0.01, 0.06, 0.08).startswith("inconclusive (the thesis' direction")
    assert judge(-0.1, -0.06, -0.11, 0.01, 0.06, 0.3) == "inconclusive"


@pytest.fixture(scope="module")
def committed():
    return Committed(DOCS)


def _csv(path):
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_the_committed_headline_q_count_each_test_once():
    head = _csv(DOCS / "headline.csv")
    unique = {}
    for r in head:
        if r["p"] in ("", "nan"):
            continue
        picks = set(json.loads(r["k_chosen"]).values()) if r["method"] == HELD_OUT_K else {r["method"]}
        key = (picks.pop(), r["sampler"], r["steps"]) if len(picks) == 1 else (r["method"], r["sampler"], r["steps"])
        assert unique.setdefault(key, r)["q"] == r["q"]
    family = list(unique.values())
    assert len(family) == 54  # 59 rows with a p, five of them repeating a k's row
    for r, q in zip(family, benjamini_hochberg([float(r["p"]) for r in family])):
        assert math.isclose(float(r["q"]), q, rel_tol=1e-12)


def test_the_committed_files_give_the_reports_own_numbers(committed):
    n_boot = converged().evaluation.bootstrap
    # a contrast of the report, recomputed from results.csv
    want = next(r for r in committed.contrasts
                if (r["first"], r["second"], r["sampler"], r["steps"]) == ("mdss_k10/off", "mdss_k4/off", "ddpm", "30"))
    got = paired_difference(committed.series("mdss_k10", "ddpm", 30), committed.series("mdss_k4", "ddpm", 30), n_boot)
    assert all(math.isclose(got[k], float(want[k]), rel_tol=1e-12) for k in ("diff", "ci_low", "ci_high", "p", "mde"))
    # the side probe against the unscaled fine-tune, as lambda_probe.json has it
    probe = json.loads((DOCS / "lambda_probe.json").read_text())["test_vs_unscaled"][0]
    got = paired_difference(committed.series(PROBE, "ddpm", 30), committed.series("ddpm", "ddpm", 30), n_boot)
    assert all(math.isclose(got[k], probe[k], rel_tol=1e-12) for k in ("diff", "ci_low", "ci_high", "p"))
    # k by held-out is the chosen k's row
    row = next(r for r in committed.headline if (r["method"], r["sampler"], r["steps"]) == (HELD_OUT_K, "ddpm", "30"))
    assert math.isclose(committed.mean(HELD_OUT_K, "ddpm", 30), float(row["mean"]), rel_tol=1e-12)


def test_the_committed_posthoc_contrasts_and_verdicts_are_current(committed):
    posthoc = posthoc_contrasts(committed, converged().evaluation.bootstrap)
    for name, rows in (("posthoc_contrasts.csv", posthoc), ("verdicts.csv", verdicts(committed, posthoc))):
        kept = _csv(DOCS / name)
        assert len(kept) == len(rows)
        for a, b in zip(kept, rows):
            for k, v in b.items():
                if isinstance(v, float):
                    assert math.isclose(float(a[k]), v, rel_tol=1e-9), (name, k)
                elif not isinstance(v, list):
                    assert a[k] == str(v), (name, k)


def test_a_report_without_the_claims_rows_is_refused_naming_the_row(tmp_path, capsys):
    """A report of another preset (here: the converged one with its DDPM-30 rows gone) is refused with the file and
    the missing row named, before any file of the folder is rewritten."""
    import shutil

    from benchmarks.exposure_bias.verdicts import main

    folder = tmp_path / "report"
    shutil.copytree(DOCS, folder)
    with (DOCS / "headline.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with (folder / "headline.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(r for r in rows if (r["sampler"], r["steps"]) != ("ddpm", "30"))
    before = (folder / "verdicts.csv").read_bytes()
    assert main(["--dir", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'headline.csv'} has no row" in err and "'sampler': 'ddpm', 'steps': 30" in err
    assert (folder / "verdicts.csv").read_bytes() == before
