"""What the carry (benchmarks/exposure_bias/carry.py) thinks each weights folder is read by, on the six-seed
converged config — the run it exists for; the round trip itself is tested on the quick run
(tests/benchmarks/test_exposure_bias_quick.py)."""
from pathlib import Path

from benchmarks.exposure_bias.carry import units_and_needs
from benchmarks.exposure_bias.config import converged
from benchmarks.exposure_bias.protocol import Protocol


def _needs(tmp_path):
    protocol = Protocol(converged(6), tmp_path / "work", tmp_path / "out")
    all_units, needs = units_and_needs(protocol)
    return protocol, all_units, {str(n.path): {str(r.folder) for r in n.readers} for n in needs}


def test_the_pretrained_model_is_read_by_every_fine_tune_and_its_snapshots_by_the_pretraining_curve(tmp_path):
    protocol, _, needs = _needs(tmp_path)
    fine_tunes = {f"models/{v.label}/s{seed}" for seed, v in protocol.seeded_variants()}
    assert len(fine_tunes) == 51  # the script's budget: 51 fine-tunes
    assert fine_tunes <= needs["models/pretrained/final"]
    assert {"noise_floor", "pretrain_curve", "curve/ddpm", "curve/mdss_k4"} <= needs["models/pretrained/final"]
    assert needs["models/pretrained/snapshots"] == {"pretrain_curve"}


def test_a_fine_tuned_model_is_read_by_its_own_search_and_evaluation_and_the_first_seeds_figures(tmp_path):
    _, _, needs = _needs(tmp_path)
    assert needs["models/mdss_k10/s4/final"] == {"eval/mdss_k10/s4", "lambda/mdss_k10/s4"}
    assert needs["models/ip/s1/final"] == {"eval/ip/s1"}  # no held-out search for IP
    assert needs["models/ddpm/s0/final"] == {"eval/ddpm/s0", "lambda/ddpm/s0", "diagnostics/ddpm", "samples/ddpm"}
    assert needs["models/ddpm/s0/snapshots"] == {"curve/ddpm"}
    assert needs["models/ddpm/s3/snapshots"] == set()


def test_every_unit_of_the_run_is_listed_once(tmp_path):
    protocol, all_units, _ = _needs(tmp_path)
    folders = [u.folder for u in all_units]
    assert len(folders) == len(set(folders))
    assert Path("feature_net") in folders and Path("models/pretrained") in folders
    assert len([f for f in folders if f.parts[0] == "eval"]) == len(protocol.seeded_variants())
