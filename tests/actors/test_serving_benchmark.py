"""benchmarks/serving_gpu.py runs end to end in its tiny CPU mode and prints its table."""
import json
import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "serving_gpu.py"


# ~20 s alone on 2 quiet cores (mostly importing diffusers, transformers and open_clip).
@pytest.mark.slow
def test_tiny_cpu_run_prints_a_row_per_measurement(tmp_path, capsys):
    bench = runpy.run_path(str(SCRIPT), run_name="serving_gpu")
    out_json = tmp_path / "rows.json"
    rows = bench["main"](["--device", "cpu", "--tiny", "--json", str(out_json)])
    printed = capsys.readouterr().out
    plan = bench["TINY"]
    assert [(r.role, r.batch) for r in rows] == [("t2i", b) for b in plan.t2i_batches] + [("clip text", b) for b in plan.clip_batches]
    assert all(r.items_per_s > 0 and r.s_per_batch > 0 for r in rows)
    assert printed.startswith("device: CPU")
    assert "images/s" in printed and "texts/s" in printed
    assert len(json.loads(out_json.read_text())["rows"]) == len(rows)


def test_full_plan_matches_the_published_setting():
    bench = runpy.run_path(str(SCRIPT), run_name="serving_gpu")
    full = bench["FULL"]
    assert (full.image_size, full.steps, full.t2i_batches, full.clip_model, full.clip_batches) == (512, 25, (1, 8, 32), "ViT-L-14", (1, 256))
    assert bench["SD15_UNET"]["block_out_channels"] == (320, 640, 1280, 1280)
