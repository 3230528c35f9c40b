"""``python -m agents.evaluate`` through its CLI on a local Ray with the offline model kit:
the actors (T2I, CLIP, captioner, DINO and ViT image embedders) start from the config,
the methods run and the outputs are written (resumption is tested in process, test_eval_run.py)."""
import csv
import json

import numpy as np
import pytest
import yaml
from PIL import Image

from agents.image_id import content_id
from agents.browser.results import RESULTS_JSONL, ResultsLog

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_cli_on_ray_with_the_offline_kit(tmp_path, monkeypatch, capsys, mlflow_server_uri):
    from actors.offline_kit import captioner, clip, image_embedders, t2i
    from agents.eval.interrogator import LIST_FILES, package_data_dir
    from agents.evaluate import main

    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    kit = tmp_path / "kit"
    terms = tmp_path / "terms"
    terms.mkdir()
    for fname in LIST_FILES.values():
        (terms / fname).write_text("\n".join((package_data_dir() / fname).read_text().splitlines()[:30]) + "\n")
    profile = {"t2i": t2i.build(kit), "clip": clip.build(kit), "captioner": captioner.build(kit), **image_embedders.build(kit),
               "ray": {"num_cpus": 2},
               "evaluation": {"seeds": [0, 1], "interrogator": {"data_dir": str(terms), "flavor_candidates": 4, "max_chain": 2},
                              "run_missing_arpo": False,
                              # the table into a real MLflow server on loopback, read back below
                              "tracking": {"enabled": True, "uri": mlflow_server_uri, "experiment": "eval-cli-test"}}}
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(profile))
    images = tmp_path / "images"
    images.mkdir()
    batch = ResultsLog(tmp_path / "batch" / RESULTS_JSONL)
    for i in range(2):
        path = images / f"im{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        batch.append({"image_id": content_id(path), "source": path.name, "status": "done", "best_iteration": 0,
                      "prompt": {"content": [f"thing {i}"], "style": [], "rendered": f"thing {i}"},
                      "iterations": [{"iteration": 0, "rendered": f"thing {i}", "clip_t": 0.1, "clip_i": 0.5}]})
    args = ["--dir", str(images), "--config", str(tmp_path / "profile.yaml"), "--methods", "arpo,blip2,clip_interrogator",
            "--out", str(tmp_path / "out"), "--arpo-results", str(tmp_path / "batch")]
    assert main(args) == 0
    rows = list(csv.DictReader((tmp_path / "out" / "table.csv").open()))
    assert [r["method"] for r in rows] == ["arpo", "blip2", "clip_interrogator"] and {r["n_images"] for r in rows} == {"2"}
    records = [json.loads(x) for x in (tmp_path / "out" / "eval_records.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "prompt" for r in records) == 6 and sum(r["kind"] == "seed" for r in records) == 12
    assert "2 images × 3 methods" in capsys.readouterr().err
    assert (tmp_path / "out" / "gallery.html").is_file() and (tmp_path / "out" / "curve.svg").is_file()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("eval-cli-test").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["expectdiff.exit_code"] == "0"
    assert run.data.params["methods"] == "['arpo', 'blip2', 'clip_interrogator']" and run.data.params["seeds"] == "[0, 1]"
    for row in rows:  # every table cell is a metric, equal to the CSV's (written to 4 decimals)
        assert run.data.metrics[f"{row['method']}.n_images"] == 2
        assert run.data.metrics[f"{row['method']}.clip_t.mean"] == pytest.approx(float(row["clip_t"]), abs=6e-5)
        for metric in ("clip_i", "dino", "vit"):
            assert run.data.metrics[f"{row['method']}.{metric}.mean"] == pytest.approx(float(row[f"{metric}_mean"]), abs=6e-5)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"table.md", "table.csv", "gallery.html"}
