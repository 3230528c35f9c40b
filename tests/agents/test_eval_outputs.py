"""Table, curve, gallery and the record log of the evaluation, on hand-made values."""
import csv
import io
import json

import pytest

from agents.eval import curve, table
from agents.eval.arpo_source import best_up_to, plan_arpo
from agents.eval.config import EvalConfig
from agents.eval.gallery import render_gallery
from agents.eval.methods import EvalImage, MethodSpec, read_prompt_file
from agents.eval.records import EvalRecords, fingerprint


def value(clip_t, per_seed):
    return {"clip_t": clip_t, "seeds": {s: {"clip_i": v, "dino": v / 2, "vit": v / 4, "image": f"img/{s}.png"} for s, v in per_seed.items()},
            "prompt": f"prompt {clip_t}"}


VALUES = {
    "a": {"x": value(30, {0: 80, 1: 82}), "y": value(20, {0: 60, 1: 70})},
    "b": {"x": value(10, {0: 50, 1: 50})},  # b has no value for image y
}
LABELS = {"a": "Method <A>", "b": "=B"}


def test_common_images_compare_like_with_like():
    rows = table.summarise(VALUES, LABELS, [0, 1], "common")
    a, b = rows
    assert a.n_images == b.n_images == 1
    assert a.cells["clip_t"].mean == 30 and a.cells["clip_i"].mean == pytest.approx(81) and a.cells["clip_i"].std == pytest.approx(1)
    assert a.cells["dino"].mean == pytest.approx(40.5)


def test_each_uses_every_image_of_a_method():
    a, b = table.summarise(VALUES, LABELS, [0, 1], "each")
    assert a.n_images == 2 and a.cells["clip_t"].mean == 25
    # per-seed means over images: seed 0 (80+60)/2 = 70, seed 1 (82+70)/2 = 76 -> 73 ± 3
    assert a.cells["clip_i"].mean == pytest.approx(73) and a.cells["clip_i"].std == pytest.approx(3)
    assert b.n_images == 1


def test_incomplete_seeds_do_not_count():
    values = {"a": {"x": value(30, {0: 80})}}
    (row,) = table.summarise(values, {"a": "A"}, [0, 1], "each")
    assert row.n_images == 0 and row.cells["clip_i"].format() == "–"


def test_markdown_and_csv():
    rows = table.summarise(VALUES, LABELS, [0, 1], "common")
    md = table.render_markdown(rows, [0, 1], note="some note")
    assert "| Method <A> | 30.00 | 81.00±1.00 | 40.50±0.50 | 20.25±0.25 | 1 |" in md and "some note" in md
    parsed = list(csv.DictReader(io.StringIO(table.render_csv(rows))))
    assert parsed[1]["label"] == "'=B"  # no formula injection
    assert float(parsed[0]["clip_i_mean"]) == 81 and parsed[0]["n_seeds"] == "2"


def test_gallery_escapes_and_shows_missing_reasons():
    images = [EvalImage("x", "x<1>.png", None, "images/x/reference.png"), EvalImage("y", "y.png", None, "images/y/reference.png")]
    rows = table.summarise(VALUES, LABELS, [0, 1], "common")
    page = render_gallery(images, LABELS, VALUES, rows, seed=1, random_weight_roles=["t2i"], missing={"b": {"y": "no <prompt>"}})
    assert "Method &lt;A&gt;" in page and "x&lt;1&gt;.png" in page and "no &lt;prompt&gt;" in page
    assert 'src="img/1.png"' in page and "Random-weight models serve t2i" in page


ITS = [{"iteration": 0, "clip_t": 0.20, "clip_i": 0.50, "rendered": "p0"},
       {"iteration": 1, "clip_t": 0.25, "clip_i": 0.60, "rendered": "p1"},
       {"iteration": 2, "clip_t": 0.30, "clip_i": 0.55, "rendered": "p2"}]


def test_best_up_to_is_what_arpo_would_return_after_k_steps():
    record = {"iterations": ITS}
    assert [best_up_to(record, k)["rendered"] for k in range(4)] == ["p0", "p1", "p1", "p1"]
    tie = {"iterations": [{"iteration": 0, "clip_i": 0.5}, {"iteration": 1, "clip_i": 0.5}]}
    assert best_up_to(tie, 1)["iteration"] == 0  # ties keep the earlier prompt, like the agent


def test_recorded_curve_carries_early_stops_forward():
    records = {"x": {"iterations": ITS}, "y": {"iterations": ITS[:1]}}
    series = {s.metric: s for s in curve.recorded_series("ARPO", records)}
    assert series["clip_i"].values == pytest.approx([50, 55, 55])
    assert series["clip_t"].values == pytest.approx([20, 22.5, 22.5])
    svg = curve.render_svg(list(series.values()), title="a <b> & c")
    assert svg.startswith("<svg") and "a &lt;b&gt; &amp; c" in svg and svg.count("<polyline") == 2
    assert "ARPO,clip_i,2,55.0000,2" in curve.render_csv(list(series.values()))


def test_records_drop_a_partial_last_line_and_match_fingerprints(tmp_path):
    path = tmp_path / "r.jsonl"
    log = EvalRecords(path)
    log.append({"kind": "prompt", "image_id": "x", "method": "a", "fp": "f1", "prompt": "p", "clip_t": 1.0})
    log.append({"kind": "seed", "image_id": "x", "method": "a", "seed": 0, "fp": "s1", "clip_i": 1, "dino": 2, "vit": 3})
    with open(path, "ab") as fh:
        fh.write(b'{"kind": "seed", "ima')
    again = EvalRecords(path)
    assert again.prompt("x", "a", "f1") and again.prompt("x", "a", "other") is None
    assert again.seed("x", "a", 0, "s1") and again.seed_by_fp("s1")["vit"] == 3
    assert path.read_bytes().endswith(b"}\n") and len(path.read_text().splitlines()) == 2
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1}) != fingerprint({"a": 1})


def test_prompt_file_format(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("Image,Prompt,notes\nx.png,  a   cat ,n\n\n")
    assert read_prompt_file(f) == {"x.png": "a cat"}
    f.write_text("file,text\nx.png,a\n")
    with pytest.raises(ValueError, match="'image' and 'prompt'"):
        read_prompt_file(f)
    f.write_text("image,prompt\nx.png,a\nx.png,b\n")
    with pytest.raises(ValueError, match="second prompt"):
        read_prompt_file(f)


def test_arpo_variants_and_labels(tmp_path):
    cfg = EvalConfig.model_validate({"evaluation": {"arpo_variants": {
        "mistral": {"llm": {"model": "mistralai/Mistral-7B-Instruct-v0.2"}, "results_dir": str(tmp_path / "m")}}}})
    default = plan_arpo(MethodSpec("arpo", "arpo"), cfg, tmp_path)
    assert default.label == "ARPO (llava-v1.6-mistral-7b-hf, Llama-2-13b-chat-hf)" and default.results_dir == tmp_path / "arpo" / "default"
    mistral = plan_arpo(MethodSpec("arpo:mistral", "arpo", "mistral"), cfg, tmp_path)
    assert mistral.cfg.llm.model == "mistralai/Mistral-7B-Instruct-v0.2" and mistral.results_dir == tmp_path / "m"
    vanilla = plan_arpo(MethodSpec("arpo:vanilla", "arpo", "vanilla"), cfg, tmp_path)
    assert vanilla.cfg.agent.framework == "vanilla" and vanilla.label.endswith("vanilla")
    with pytest.raises(ValueError, match="no ARPO variant 'gpt'"):
        plan_arpo(MethodSpec("arpo:gpt", "arpo", "gpt"), cfg, tmp_path)


def test_cli_config_and_errors(tmp_path, capsys):
    from agents.evaluate import build_parser, config_from_args, main

    profile = tmp_path / "p.yaml"
    profile.write_text("agent: {max_steps: 3}\nevaluation: {concurrency: 4}\n")  # a batch profile plus an eval section
    args = build_parser().parse_args(["--dir", "d", "--config", str(profile), "--methods", "arpo, blip2", "--seeds", "5,6",
                                      "--out", str(tmp_path / "o"), "--set", "evaluation.table_images=each"])
    cfg = config_from_args(args)
    assert cfg.agent.max_steps == 3 and cfg.evaluation.methods == ["arpo", "blip2"] and cfg.evaluation.seeds == [5, 6]
    assert cfg.evaluation.table_images == "each" and cfg.evaluation.concurrency == 4
    assert main(["--dir", str(tmp_path), "--methods", "gpt4"]) == 2
    assert "unknown method 'gpt4'" in capsys.readouterr().err
    assert main(["--dir", str(tmp_path), "--seeds", "0,0"]) == 2
    assert main(["--dir", str(tmp_path / "nope")]) == 2


def test_gpu_eval_recipe_validates_and_matches_the_batch_profile():
    from pathlib import Path

    from agents.config import ArpoConfig
    from core.config import load_config

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(EvalConfig, root / "configs" / "gpu_eval.yaml")
    batch = load_config(ArpoConfig, root / "configs" / "gpu_cluster.yaml")
    # the same roles (only the CLIP text cache is larger): ARPO results of the batch profile are reused as they are
    same = cfg.arpo_config()
    same.clip.text_cache_size = batch.clip.text_cache_size
    assert same == batch and cfg.clip.text_cache_size >= 106_000 + 2048 * 32
    assert (cfg.dino.model, cfg.vit.model, cfg.clip.model_name) == ("facebook/dino-vits16", "google/vit-large-patch16-224", "ViT-L-14")
    assert cfg.evaluation.seeds == [0, 1, 2] and cfg.evaluation.interrogator.max_flavors is None


async def test_output_folder_inside_the_image_folder_is_refused(tmp_path):
    from agents.batch_reverse import SetupError
    from agents.eval.methods import parse_methods
    from agents.eval.runner import Evaluation

    with pytest.raises(SetupError, match="inside the image folder"):
        await Evaluation(EvalConfig(), tmp_path, tmp_path / "eval", roles=None, specs=parse_methods("blip2")).run()
