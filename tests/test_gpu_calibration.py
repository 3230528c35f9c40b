"""benchmarks/gpu_calibration.py (issue #24 item 7): the recipe comparison's arithmetic, pinned, and a tiny CPU dry run
of every part (the figures of a tiny run mean nothing; the run shows the script works end to end before a GPU session)."""
import json
import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_calibration.py"


@pytest.fixture(scope="module")
def bench():
    return runpy.run_path(str(SCRIPT), run_name="gpu_calibration")


def test_datasheet_names_the_device_by_its_most_specific_entry(bench):
    datasheet = bench["datasheet"]
    assert datasheet("NVIDIA H200")[0] == "H200"
    assert datasheet("NVIDIA H100 PCIe")[0] == "H100 PCIe"  # before the SXM entry that its name also contains
    assert datasheet("NVIDIA H100 80GB HBM3")[:3] == ("H100", 989.5, 3350.0)
    assert datasheet("CPU (x86_64, 2 threads)") is None


def test_implied_efficiencies_recover_the_recipes_assumptions_and_move_with_the_measurement(bench):
    against = bench["against_recipe"]
    weights, kv, flops_tok = 2 * 7.24e9, 131072 * 3000, 2 * 7.24e9
    tflops, gbps = 989.5, 4800.0
    recipe = against(weights, kv, flops_tok, 1.0, 1.0, 1.0, tflops, gbps)["recipe_this_gpu"]
    assert recipe["t0_s"] == pytest.approx(14.48e9 / (0.7 * 4.8e12))  # 4.31 ms on an H200
    assert recipe["prefill_s_per_token"] == pytest.approx(14.48e9 / (0.5 * 989.5e12))
    # measured exactly what the recipe predicts: the assumed efficiencies come back
    kv_only = kv / (0.7 * gbps * 1e9)
    same = against(weights, kv, flops_tok, recipe["t0_s"], kv_only, recipe["prefill_s_per_token"], tflops, gbps)["implied"]
    assert same == pytest.approx({"bw_efficiency_t0": 0.7, "bw_efficiency_kv": 0.7, "flop_efficiency_prefill": 0.5})
    # twice as slow a decode step: half the bandwidth efficiency
    slow = against(weights, kv, flops_tok, 2 * recipe["t0_s"], kv_only, recipe["prefill_s_per_token"], tflops, gbps)["implied"]
    assert slow["bw_efficiency_t0"] == pytest.approx(0.35)


def test_the_full_setup_is_the_issues_measurement(bench):
    full = bench["FULL"]
    assert (full.image_size, full.steps, full.t2i_batches) == (512, 25, (1, 4, 8))
    assert (full.prompt_tokens, full.context_tokens, full.decode_seqs) == (3000, 3000, (1, 16, 64))
    assert {k: full.llm[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                                    "intermediate_size", "vocab_size")} == {
        "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "intermediate_size": 14336, "vocab_size": 32000}


def test_parts_are_checked(bench, capsys):
    with pytest.raises(SystemExit):
        bench["main"](["--device", "cpu", "--tiny", "--parts", "t2i,gpu"])
    assert "unknown ['gpu']" in capsys.readouterr().err


# ~35 s on 2 quiet cores: the share part starts two worker processes that each import diffusers.
@pytest.mark.slow
def test_tiny_cpu_dry_run_of_every_part(bench, tmp_path, capsys):
    out = tmp_path / "calib.json"
    result = bench["main"](["--device", "cpu", "--tiny", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "TINY dry run" in printed and "per-process speed shared ÷ alone" in printed and "fit t0 + t1·n" in printed
    assert [r["batch"] for r in result["t2i"]["rows"]] == [1, 2]
    assert result["share"]["alone"]["calls"] > 0 and len(result["share"]["shared"]) == 2
    assert all(s["calls"] > 0 for s in result["share"]["shared"])
    assert [r["seqs"] for r in result["llm"]["decode"]] == [1, 4]
    assert not any(r["cuda_graph"] for r in result["llm"]["decode"])  # CPU: timed eagerly, and said so
    assert "implied" not in result["llm"]  # no datasheet for a CPU: no efficiency is made up
    assert json.loads(out.read_text())["llm"]["parameters"] == result["llm"]["parameters"]
