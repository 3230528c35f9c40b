"""The --quick protocol end to end (CPU, offline): every stage runs, writes well-formed tables, CSVs and PNGs,
and a second run skips every unit."""
import csv
import json
import shutil

import numpy as np
import pytest
import torch

from benchmarks.exposure_bias import units
from benchmarks.exposure_bias.__main__ import main
from benchmarks.exposure_bias.config import quick
from benchmarks.exposure_bias.protocol import Protocol
from benchmarks.paired_stats import benjamini_hochberg

pytestmark = pytest.mark.slow  # ~2 min on 2 shared cores


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("eb")
    work, out = root / "work", root / "report"
    # first a process limited to two variants (what a second core would run beside another process) ...
    assert main(["--quick", "--work", str(work), "--out", str(out), "--variant", "ddpm", "--variant", "mdss_k4"]) == 0
    assert sorted(p.name for p in (work / "models").iterdir()) == ["ddpm", "mdss_k4", "pretrained"]
    assert sorted(p.name for p in (work / "eval").iterdir()) == ["ddpm", "mdss_k4"]
    # ... then the rest, resuming: the finished units are kept
    assert main(["--quick", "--work", str(work), "--out", str(out)]) == 0
    return work, out


def _csv(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_tables_and_csvs_are_well_formed(quick_run):
    work, out = quick_run
    cfg = quick()
    md = (out / "tables.md").read_text()
    for heading in ("DDPM sampler (Table 3.2)", "DDIM sampler (Table 3.3)", "DPM-Solver-1/2/3 (Table 3.4)",
                    "ξ ablation (Table 3.5)", "k ablation (Tables 3.6–3.7)", "(Table 3.8)", "Figure 3.3",
                    "Figure 3.2", "Variance error", "noise floor", "Smoke run"):
        assert heading in md, heading
    # the header names both λ grids the ε-scaled rows choose from (the extended one is issue #28's)
    union = sorted(set(cfg.evaluation.lambda_grid) | set(cfg.evaluation.lambda_grid_extended))
    assert f"chosen from {cfg.evaluation.lambda_grid} (the rows '… (extended λ grid)': from {union}" in md
    # every markdown table row has as many cells as its header (the sample grids are images, not tables)
    for block in md.split("### ")[1:]:
        if block.startswith("Samples, "):
            continue
        rows = [line for line in block.splitlines() if line.startswith("|")]
        assert len({line.count("|") for line in rows}) == 1, block[:80]

    all_results = _csv(out / "results.csv")
    ev, n_train = cfg.evaluation, len(cfg.train_seeds)
    assert {int(r["train_seed"]) for r in all_results} == set(cfg.train_seeds)
    off = [r for r in all_results if r["setting"] == "off"]
    assert len(off) == len(cfg.variants) * len(ev.cells) * len(ev.seeds) * n_train
    results = [r for r in all_results if r["train_seed"] == str(cfg.train_seeds[0])]
    assert {r["variant"] for r in results} == {v.label for v in cfg.variants}
    assert all(float(r["score"]) >= 0 for r in results)
    scaled = [r for r in results if r["setting"] == "eps_scaled"]
    # one ε-scaled cell per unscaled cell of the searched variants (a copy when the search kept λ = 1)
    assert {r["variant"] for r in scaled} == set(ev.lambda_labels) == set(cfg.scaled_labels())
    assert len(scaled) == len(ev.lambda_labels) * len(ev.cells) * len(ev.seeds)
    # and one per cell at the extended grid's λ (issue #28), sampled or copied from the λ it repeats
    ext = [r for r in results if r["setting"] == "eps_scaled_ext"]
    assert {r["variant"] for r in ext} == set(ev.lambda_labels) and len(ext) == len(scaled)
    assert {float(r["lambda"]) for r in ext} <= set(ev.lambda_grid) | set(ev.lambda_grid_extended)
    # the ε-scaled variants and the k candidates have held-out searches, one per training seed
    assert sorted(p.name for p in (work / "lambda").iterdir()) == sorted(cfg.searched_labels())
    assert sorted(p.name for p in (work / "lambda" / "mdss_k2").iterdir()) == [f"s{t}" for t in cfg.train_seeds]
    overview = md.split("### Every method × every cell")[1].split("###")[0]
    assert "| ddpm + ε-scaling |" in overview and "| ip + ε-scaling |" not in overview
    paired = md.split("### Paired difference to `ddpm`")[1].split("###")[0]
    assert "| ip |" in paired and "| ddpm + ε-scaling |" in paired and "| ddpm |" not in paired
    # the paired cell is the mean of the per-seed differences
    by = {(r["variant"], r["sampler"], r["steps"], r["setting"], r["seed"]): float(r["score"]) for r in results}
    d = [by[("ip", "ddim", "4", "off", str(s))] - by[("ddpm", "ddim", "4", "off", str(s))] for s in ev.seeds]
    ip_row = next(line for line in paired.splitlines() if line.startswith("| ip |")).split("|")
    col = [c.key for c in ev.cells].index("ddim_4") + 2
    assert ip_row[col].strip().startswith(f"{sum(d) / len(d):+.3g}")
    no_xi = [r for r in results if r["setting"] == "no_xi_denoise"]
    assert {r["variant"] for r in no_xi} == {ev.xi_ablation_label} and len(no_xi) == 4 * len(ev.seeds)

    summary = _csv(out / "summary.csv")
    assert all(r["seeds"] == str(len(ev.seeds)) for r in summary)
    lam = json.loads((work / "lambda" / "mdss_k4" / "s0" / "lambda.json").read_text())
    assert set(lam) == {c.key for c in ev.cells} and all(v["lambda"] in ev.lambda_grid for v in lam.values())
    for v in lam.values():  # the extended choice is the best held-out score of the union, the preset's of its grid
        scores = {float(k): x for k, x in v["val_scores"].items()}
        assert set(scores) == set(ev.lambda_grid) | set(ev.lambda_grid_extended)
        assert v["lambda_extended"] == min(scores, key=scores.get)
        assert v["lambda"] == min(ev.lambda_grid, key=scores.get)
    # every held-out score behind the k and λ choices is in the report folder
    held = _csv(out / "held_out_selection.csv")
    assert len(held) == len(cfg.train_seeds) * len(ev.cells) * sum(len(cfg.lambda_grid_for(lab))
                                                                   for lab in cfg.searched_labels())
    mine = {float(r["lambda"]): float(r["val_score"]) for r in held
            if (r["variant"], r["train_seed"], r["sampler"], r["steps"]) == ("mdss_k4", "0", "ddim", "4")}
    assert mine == {float(k): x for k, x in lam["ddim_4"]["val_scores"].items()}

    mse = _csv(out / "step_mse.csv")
    assert {r["kind"] for r in mse} == {"clean", "one_step", "sampled"}
    assert all(float(r["mse"]) >= 0 for r in mse)
    curve = _csv(out / "curve.csv")
    assert sorted({int(r["step"]) for r in curve}) == [0, 3, 6]
    var = _csv(out / "variance_error.csv")
    assert {r["variant"] for r in var} == {v.label for v in cfg.variants}
    info = json.loads((out / "feature_net.json").read_text())
    assert 0 < info["test_accuracy"] <= 1
    assert "![samples ddim_4](fig_samples_ddim_4.png)" in md
    grid = torch.load(work / "samples" / "ddpm" / "ddim_4.pt", weights_only=True)
    assert grid.shape == (cfg.samples.num_images, 1, cfg.image_size, cfg.image_size) and grid.abs().max() <= 1
    # the same seed and noise for every method: the rows differ only through the models
    other = torch.load(work / "samples" / "mdss_k4" / "ddim_4.pt", weights_only=True)
    assert not torch.equal(grid, other)
    for png in ("fig_step_mse_ddpm_8.png", "fig_step_mse_ddim_8.png", "fig_metric_vs_iterations.png",
                "fig_variance_error.png", "fig_samples_ddim_4.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


def test_a_second_run_skips_every_unit(quick_run, capsys):
    work, out = quick_run
    capsys.readouterr()
    assert main(["--quick", "--work", str(work), "--out", str(out)]) == 0
    log = capsys.readouterr().out
    ran = [line for line in log.splitlines() if line.startswith("  ") and "skipped" not in line]
    assert ran == [], ran
    # feature net, pretrain, pretrain curve, noise floor; finetune and evaluate per variant and training seed;
    # diagnostics and samples per variant; λ per searched variant and training seed; curve
    cfg = quick()
    n_train = len(cfg.train_seeds)
    assert log.count("skipped") == (4 + 2 * len(cfg.variants) * n_train + 2 * len(cfg.variants)
                                    + len(cfg.searched_labels()) * n_train + len(cfg.curve.labels))


def test_an_unknown_variant_is_refused_by_name(tmp_path, capsys):
    assert main(["--quick", "--work", str(tmp_path / "w"), "--variant", "mdss_k99"]) == 2
    err = capsys.readouterr().err
    assert "mdss_k99" in err and "mdss_k4" in err
    assert not (tmp_path / "w").exists()


def test_a_stage_whose_input_is_missing_fails_clearly(tmp_path, capsys):
    assert main(["--quick", "--work", str(tmp_path / "empty"), "--stage", "finetune"]) == 2
    assert "pretrain" in capsys.readouterr().err


def test_the_lambda_probe_scores_extra_factors_on_the_held_out_split(quick_run, tmp_path, capsys):
    from benchmarks.exposure_bias.lambda_probe import main as probe

    work, _ = quick_run
    out = tmp_path / "probe.json"
    assert probe(["--work", str(work), "--variant", "ddpm", "--lam", "0.99", "--lam", "1.0", "--cell", "ddim_4",
                  "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["split"] == "val" and record["seed"] == quick().evaluation.lambda_seed
    seeds = quick().train_seeds
    assert [(r["train_seed"], r["cell"], r["lambda"]) for r in record["rows"]] == \
        [(s, "ddim_4", lam) for s in seeds for lam in (0.99, 1.0)]
    for s in seeds:  # λ = 1 reproduces the protocol's own held-out score (same seed, images and split)
        search = json.loads((work / "lambda" / "ddpm" / f"s{s}" / "lambda.json").read_text())["ddim_4"]
        rows = {r["lambda"]: r["val_score"] for r in record["rows"] if r["train_seed"] == s}
        assert abs(rows[1.0] - search["val_scores"]["1.0"]) < 1e-6
        assert rows[0.99] != rows[1.0]
        # the search's own curve travels with the probe's
        assert [r for r in record["search"] if r["train_seed"] == s] == \
            [{"variant": "ddpm", "train_seed": s, "cell": "ddim_4", "lambda_chosen": search["lambda"],
              "val_scores": search["val_scores"]}]
    assert probe(["--work", str(work), "--variant", "ddpm", "--lam", "1.0", "--cell", "ddim_4", "--train-seed", "1",
                  "--out", str(out)]) == 0
    assert {r["train_seed"] for r in json.loads(out.read_text())["rows"]} == {1}
    assert probe(["--work", str(work), "--variant", "ddpm", "--lam", "1.0", "--train-seed", "7",
                  "--out", str(out)]) == 2
    assert "--train-seed [7]" in capsys.readouterr().err
    assert probe(["--work", str(work), "--variant", "ddpm", "--lam", "0.99", "--cell", "ddim_999",
                  "--out", str(out)]) == 2
    assert "ddim_999" in capsys.readouterr().err


def test_the_lambda_probe_scores_the_held_out_best_factor_on_the_test_split(quick_run, tmp_path):
    from benchmarks.exposure_bias.lambda_probe import main as probe

    work, _ = quick_run
    cfg, out = quick(), tmp_path / "probe.json"
    assert probe(["--work", str(work), "--variant", "ddpm", "--lam", "0.9", "--lam", "1.0", "--cell", "ddim_4",
                  "--test-best", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    evaluated = {}  # the protocol's own unscaled test scores {train seed: {sampling seed: score}}
    for t in cfg.train_seeds:
        for line in (work / "eval" / "ddpm" / f"s{t}" / "rows.jsonl").read_text().splitlines():
            r = json.loads(line)
            if (r["sampler"], r["steps"], r["setting"]) == ("ddim", 4, "off"):
                evaluated.setdefault(t, {})[r["seed"]] = r["score"]
    per_seed = []
    for t in cfg.train_seeds:
        held = {float(k): v for k, v in next(r for r in record["search"] if r["train_seed"] == t)["val_scores"].items()}
        held.update({r["lambda"]: r["val_score"] for r in record["rows"] if r["train_seed"] == t})
        test = [r for r in record["test"] if r["train_seed"] == t]
        assert [r["seed"] for r in test] == list(cfg.evaluation.seeds)
        assert {r["lambda"] for r in test} == {min(held, key=held.get)}  # chosen on the held-out split
        per_seed.append(np.mean([r["score"] - evaluated[t][r["seed"]] for r in test]))
    (vs,) = record["test_vs_unscaled"]
    assert vs["variant"] == "ddpm" and vs["cell"] == "ddim_4"
    assert abs(vs["diff"] - np.mean(per_seed)) < 1e-9 and vs["ci_low"] <= vs["diff"] <= vs["ci_high"]
    assert vs["lambda_chosen"] == {str(r["train_seed"]): r["lambda"] for r in record["test"]}
    # the probe's test score is the evaluation's: λ = 1 reproduces the protocol's unscaled rows
    protocol = Protocol(cfg, work, work / "report", only_variants=["ddpm"])
    cell = next(c for c in cfg.evaluation.cells if c.key == "ddim_4")
    seed = cfg.evaluation.seeds[0]
    assert abs(protocol.test_score(protocol.model(protocol.variants[0], 0), cell, seed) - evaluated[0][seed]) < 1e-6


def test_a_killed_lambda_search_resumes_from_its_last_score_on_another_machine(quick_run, tmp_path, monkeypatch):
    """A held-out λ search killed part-way (mid-write) and carried to another machine scores only what it had not
    recorded, and chooses exactly what the uninterrupted search chose."""
    work, _ = quick_run
    cfg = quick()
    partial = tmp_path / "partial"
    shutil.copytree(work, partial)
    unit = partial / "lambda" / "ddpm" / "s0"
    expected = json.loads((unit / "lambda.json").read_text())
    records = (unit / units.PARTIAL).read_text().splitlines(keepends=True)
    assert len(records) == len(cfg.evaluation.cells) * len(cfg.lambda_grid_for("ddpm"))
    half = len(records) // 2
    (unit / units.MARKER).unlink()
    (unit / "lambda.json").unlink()
    (unit / units.PARTIAL).write_text("".join(records[:half]) + records[half][:12])  # killed mid-write
    carried = tmp_path / "carry"
    assert main(["--quick", "--work", str(partial), "--out", str(tmp_path / "r1"), "--pack", str(carried)]) == 0
    manifest = json.loads((carried / "CARRY.json").read_text())
    assert manifest["unfinished"] == [f"lambda/ddpm/s0 (unfinished: {half} partial records carried, to resume)"]
    assert "models/ddpm/s0/final" in manifest["weights_kept"]

    moved = tmp_path / "other_machine"
    assert main(["--quick", "--work", str(moved), "--out", str(tmp_path / "r2"), "--unpack", str(carried)]) == 0
    scored, score = [], Protocol.held_out_score
    monkeypatch.setattr(Protocol, "held_out_score",
                        lambda self, model, cell, lam: scored.append((cell.key, lam)) or score(self, model, cell, lam))
    assert main(["--quick", "--work", str(moved), "--out", str(tmp_path / "r2"), "--stage", "lambda",
                 "--variant", "ddpm"]) == 0
    assert len(scored) == len(records) - half  # the torn record and those after it, nothing before
    assert units.read_done(moved / "lambda" / "ddpm" / "s0")["resumed_records"] == half  # its wall time: the rest
    assert json.loads((moved / "lambda" / "ddpm" / "s0" / "lambda.json").read_text()) == expected
    assert units.is_done(moved / "lambda" / "ddpm" / "s0", Protocol(cfg, moved, tmp_path / "r2").fp(
        "lambda", next(v for v in cfg.variants if v.label == "ddpm"), 0))


def test_training_seed_statistics_controls_and_pretraining_convergence(quick_run):
    work, out = quick_run
    cfg = quick()
    md = (out / "tables.md").read_text()
    assert "### Pretraining convergence" in md and ("**converged**" in md or "**NOT converged**" in md)
    assert "### Final pretrained model at several step counts" in md
    curve = _csv(out / "pretrain_curve.csv")
    assert sorted(int(r["step"]) for r in curve if r["kind"] == "snapshot") == [20, 40]
    assert [(r["sampler"], int(r["steps"])) for r in curve if r["kind"] == "final"] == [("ddim", 2), ("ddim", 4), ("ddim", 8)]
    head = _csv(out / "headline.csv")
    methods = {r["method"] for r in head}
    assert {"sdss_sample", "mdss_k4_sample", "chain_only_k4", "ddpm + ε-scaling", "mdss (k by held-out)",
            "chain_only (k by held-out)", "ddpm + ε-scaling (extended λ grid)",
            "mdss (k by held-out) + ε-scaling (extended λ grid)"} <= methods
    assert {"mde_exact", "p_sign_flip"} <= set(head[0])
    for r in head:
        assert int(r["n_train_seeds"]) == len(cfg.train_seeds)
        if r["method"] == "ddpm":
            assert r["diff_vs_ddpm"] == ""
            continue
        lo, hi = float(r["ci_low"]), float(r["ci_high"])
        assert lo <= float(r["diff_vs_ddpm"]) <= hi and float(r["mde"]) >= 0
        assert r["verdict"] == ("better" if hi < 0 else "worse" if lo > 0 else "inconclusive")
        if r["method"] == "mdss (k by held-out)":
            assert set(json.loads(r["k_chosen"]).values()) <= set(cfg.evaluation.k_selection_labels)
    # the headline's per-seed mean for one cell is the mean over that seed's sampling seeds
    results = _csv(out / "results.csv")
    ddpm = [float(r["score"]) for r in results if (r["variant"], r["sampler"], r["steps"], r["setting"]) == ("ddpm", "ddim", "4", "off")]
    row = next(r for r in head if (r["method"], r["sampler"], r["steps"]) == ("ddpm", "ddim", "4"))
    assert abs(float(row["mean"]) - sum(ddpm) / len(ddpm)) < 1e-9
    assert "### Over training seeds" in md
    # the controls' contrasts: every pair in every cell, and (paired means being linear) sample − mean equals the
    # difference of their differences to the DDPM fine-tune
    con = _csv(out / "contrasts.csv")
    pairs = {(r["first"], r["second"]) for r in con}
    assert {("sdss_sample/off", "sdss/off"), ("mdss_k4_sample/off", "mdss_k4/off"), ("chain_only_k4/off", "mdss_k4/off"),
            ("mdss_ddim_k4/off", "mdss_k4/off"), ("mdss_k2/off", "mdss_k4/off"), ("sdss/off", "sdss/no_xi_denoise")} <= pairs
    assert len(con) == len({(r["first"], r["second"], r["sampler"], r["steps"]) for r in con})
    by = {(r["method"], r["sampler"], r["steps"]): r for r in head}
    for r in con:
        lo, hi = float(r["ci_low"]), float(r["ci_high"])
        assert lo <= float(r["diff"]) <= hi and r["verdict"] == ("better" if hi < 0 else "worse" if lo > 0 else "inconclusive")
        if (r["first"], r["second"]) == ("sdss_sample/off", "sdss/off"):
            a, b = by[("sdss_sample", r["sampler"], r["steps"])], by[("sdss", r["sampler"], r["steps"])]
            assert abs(float(r["diff"]) - (float(a["diff_vs_ddpm"]) - float(b["diff_vs_ddpm"]))) < 1e-9
    xi = [r for r in con if r["second"] == "sdss/no_xi_denoise"]
    assert xi and {r["sampler"] for r in xi} <= {"ddpm", "ddim"}
    assert "#### The controls" in md
    # false-discovery control: each table's q are the Benjamini–Hochberg adjustment of its own p (one family each;
    # contrasts.csv: one per `family`), each test once: a row on the same data as another (a held-out k choice that
    # picked one k in every seed, an ε-scaled setting whose λ was another setting's in every seed) shares its q
    for r in head:
        picks = set(json.loads(r["k_chosen"]).values()) if r["method"] == "mdss (k by held-out)" else set()
        if len(picks) == 1:
            assert r["q"] == by[(picks.pop(), r["sampler"], r["steps"])]["q"]
    assert {r["family"] for r in con} == {"controls", "pre-specified (issue #28)"}
    for family in [head] + [[r for r in con if r["family"] == f] for f in ("controls", "pre-specified (issue #28)")]:
        tests = {}
        for r in family:
            if r.get("p", "") != "":
                key = (r["sampler"], r["steps"], r["p"], r.get("diff_vs_ddpm", r.get("diff")))
                assert tests.setdefault(key, r)["q"] == r["q"]
        assert tests
        q = benjamini_hochberg([float(r["p"]) for r in tests.values()])
        for r, want in zip(tests.values(), q):
            assert (r["q"] == "nan" and want != want) or abs(float(r["q"]) - want) < 1e-9
    assert ", q " in md and "#### Pre-specified control contrasts (issue #28)" in md


def test_the_report_never_replaces_recorded_results_with_empty_tables(quick_run, tmp_path, capsys):
    _, out = quick_run
    before = (out / "tables.md").read_text()
    assert main(["--quick", "--work", str(tmp_path / "nothing"), "--out", str(out), "--stage", "report"]) == 2
    assert "would replace them with empty tables" in capsys.readouterr().err
    assert (out / "tables.md").read_text() == before


def test_a_longer_pretraining_continues_the_finished_shorter_one(tmp_path, capsys):
    from benchmarks.exposure_bias.config import ProtocolConfig
    from benchmarks.exposure_bias.trainer import snapshot_folders

    torch.set_num_threads(1)
    short = quick()
    longer = ProtocolConfig.model_validate({**short.model_dump(), "pretrain": {**short.pretrain.model_dump(), "steps": 60}})
    work = tmp_path / "work"
    Protocol(short, work, tmp_path / "out").run(("pretrain",))
    folder = work / "models" / "pretrained"
    assert [s for s, _ in snapshot_folders(folder)] == [20, 40]
    capsys.readouterr()
    p = Protocol(longer, work, tmp_path / "out")
    p.run(("pretrain",))
    assert "continuing the finished 40-step run to 60 steps" in capsys.readouterr().out
    assert [s for s, _ in snapshot_folders(folder)] == [20, 40, 60]  # the 40-step run's snapshots are kept
    history = json.loads((folder / "DONE.json").read_text())
    assert history["steps"] == 60 and history["fingerprint"] == p.fp("pretrain")
    # another change than the length starts over
    other = ProtocolConfig.model_validate({**longer.model_dump(), "pretrain": {**longer.pretrain.model_dump(), "lr": 5e-4}})
    Protocol(other, work, tmp_path / "out").run(("pretrain",))
    assert "continuing" not in capsys.readouterr().out
    assert [s for s, _ in snapshot_folders(folder)] == [20, 40, 60]


def _unit_files(work):
    return {str(p.relative_to(work)): p.read_bytes() for p in sorted(work.rglob("*")) if p.is_file()}


def test_a_packed_run_continues_on_another_machine_with_the_same_results(quick_run, tmp_path, monkeypatch):
    """The carry (benchmarks/exposure_bias/carry.py) of a run with three evaluations left: one killed before its
    first score (left out, redone) and two killed part-way (their scores so far travel and only the rest are
    made: an ε-scaled variant and the ξ-ablation one, whose settings differ by λ and by ξ). The weights those
    evaluations read travel, the others do not, and the unpacked run evaluates to the same rows as the original."""
    work, _ = quick_run
    partial = tmp_path / "partial"
    shutil.copytree(work, partial)
    left = partial / "eval" / "ip" / "s0"
    expected_rows = {label: (partial / "eval" / label / "s0" / "rows.jsonl").read_text()
                     for label in ("ip", "mdss_k4", "sdss")}
    (left / units.MARKER).unlink()  # as if the machine went before this evaluation recorded a score
    (left / units.PARTIAL).unlink()
    resumed, kept = {}, {}
    for label in ("mdss_k4", "sdss"):  # ... and these two part-way, in the middle of writing a score
        folder = partial / "eval" / label / "s0"
        records = (folder / units.PARTIAL).read_text().splitlines(keepends=True)
        rows = [json.loads(line) for line in expected_rows[label].splitlines()]
        # one record per score made: a setting whose λ another setting already sampled is a copy, not a score
        assert len(records) == len({(r["sampler"], r["steps"], r["lambda"], r["xi_denoise"], r["seed"]) for r in rows})
        assert len({r["lambda"] for r in rows} if label == "mdss_k4" else {r["xi_denoise"] for r in rows}) > 1
        resumed[label], kept[label] = len(records), len(records) // 3
        (folder / units.MARKER).unlink()
        (folder / "rows.jsonl").unlink()
        (folder / units.PARTIAL).write_text("".join(records[:kept[label]]) + records[kept[label]][:9])
    carried = tmp_path / "carry"
    assert main(["--quick", "--work", str(partial), "--out", str(tmp_path / "r1"), "--pack", str(carried)]) == 0
    manifest = json.loads((carried / "CARRY.json").read_text())
    assert set(manifest["weights_kept"]) == {"models/ip/s0/final", "models/mdss_k4/s0/final", "models/sdss/s0/final"}
    assert sorted(manifest["unfinished"]) == [f"eval/{label}/s0 (unfinished: {kept[label]} partial records carried, "
                                              "to resume)" for label in ("mdss_k4", "sdss")]
    assert not (carried / "eval" / "ip" / "s0").exists()  # unfinished, nothing recorded: left out, redone
    assert sorted(p.name for p in (carried / "eval" / "sdss" / "s0").iterdir()) == [units.PARTIAL, units.STARTED]
    assert not (carried / "models" / "pretrained" / "final").exists()  # no unfinished unit reads it
    assert not list(carried.rglob("checkpoint")) and not list(carried.rglob("snapshots"))
    assert (carried / "eval" / "ddpm" / "s0" / "rows.jsonl").is_file()
    # a pack over a carried folder whose finished units the work folder lacks is refused
    assert main(["--quick", "--work", str(tmp_path / "empty"), "--out", str(tmp_path / "r1"), "--pack",
                 str(carried)]) == 2

    moved = tmp_path / "other_machine"
    assert main(["--quick", "--work", str(moved), "--out", str(tmp_path / "r2"), "--unpack", str(carried)]) == 0
    assert main(["--quick", "--work", str(moved), "--out", str(tmp_path / "r2"), "--unpack", str(carried)]) == 2
    scored, score = [], Protocol.test_score
    monkeypatch.setattr(Protocol, "test_score", lambda self, model, *a, **kw: scored.append(model.has_xi)
                        or score(self, model, *a, **kw))
    assert main(["--quick", "--work", str(moved), "--out", str(tmp_path / "r2"), "--stage", "evaluate"]) == 0
    ip_scores = len(expected_rows["ip"].splitlines())
    assert len(scored) == ip_scores + sum(resumed[lab] - kept[lab] for lab in ("mdss_k4", "sdss"))
    for label, rows in expected_rows.items():
        assert (moved / "eval" / label / "s0" / "rows.jsonl").read_text() == rows, label
        assert units.read_done(moved / "eval" / label / "s0")["resumed_records"] == kept.get(label, 0)
    # every other finished unit came across as it was
    original = _unit_files(work)
    for name, blob in _unit_files(moved).items():
        if name.startswith(("eval/ip/s0/", "eval/mdss_k4/s0/", "eval/sdss/s0/", "logs/")):
            continue
        assert original[name] == blob, name
