"""``agents.evaluate`` end to end on the offline model kit (in-process servers, no Ray):
every method, the outputs, reuse of ARPO results, and resumption."""
import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agents.eval.config import EvalConfig
from agents.eval.methods import parse_methods
from agents.eval.metrics import cosine_x100
from agents.eval.records import RECORDS_FILE
from agents.eval.runner import EvalRoles, Evaluation
from agents.image_id import content_id
from agents.browser.results import RESULTS_JSONL, ResultsLog

SEEDS = [0, 1]


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """Every role's tiny model, built and loaded once for the module."""
    from actors.captioner import CaptionerModel
    from actors.clip_scorer import ClipModel
    from actors.config import CaptionerConfig, ClipConfig, T2IConfig, VLMConfig
    from actors.image_embedder import ImageEmbedderConfig, ImageEmbedderModel
    from actors.offline_kit import captioner, clip, image_embedders, t2i, vlm
    from actors.t2i import T2IModel

    root = tmp_path_factory.mktemp("kit")
    from actors.offline_kit import OFFLINE_KIT_MARKER

    (root / OFFLINE_KIT_MARKER).write_text("random weights\n")  # as python -m agents.offline_kit writes at the kit root
    sections = {"t2i": t2i.build(root), "clip": clip.build(root), "captioner": captioner.build(root),
                "vlm": vlm.build(root / "vlm"), **image_embedders.build(root)}
    models = {
        "t2i": T2IModel(T2IConfig(**sections["t2i"])), "clip": ClipModel(ClipConfig(**sections["clip"])),
        "captioner": CaptionerModel(CaptionerConfig(**sections["captioner"])),
        "dino": ImageEmbedderModel(ImageEmbedderConfig(**sections["dino"])),
        "vit": ImageEmbedderModel(ImageEmbedderConfig(**sections["vit"])),
    }
    _ = VLMConfig(**sections["vlm"])
    return sections, models


class Counting:
    """Counts the calls of a role (per method) and passes them on."""

    def __init__(self, inner):
        self.inner, self.calls = inner, Counter()

    def __getattr__(self, name):
        attr = getattr(self.inner, name)

        async def call(*args, **kwargs):
            self.calls[name] += 1
            return await attr(*args, **kwargs)
        return call


def make_roles(kit) -> EvalRoles:
    """Fresh servers (their batchers belong to the running event loop) around the loaded models."""
    from actors.captioner import CaptionerServer
    from actors.chat.server import VLMServer
    from actors.clip_scorer import ClipServer
    from actors.image_embedder import ImageEmbedderServer
    from actors.t2i import T2IServer

    sections, m = kit
    return EvalRoles(
        t2i=Counting(T2IServer(m["t2i"].cfg, model=m["t2i"])), clip=Counting(ClipServer(m["clip"].cfg, model=m["clip"])),
        dino=Counting(ImageEmbedderServer(m["dino"].cfg, model=m["dino"])), vit=Counting(ImageEmbedderServer(m["vit"].cfg, model=m["vit"])),
        captioner=Counting(CaptionerServer(m["captioner"].cfg, model=m["captioner"])), vlm=Counting(VLMServer(sections["vlm"])))


@pytest.fixture(scope="module")
def term_lists(tmp_path_factory):
    """Short CLIP-Interrogator lists (the package's full lists are tested in test_interrogator.py)."""
    from agents.eval.interrogator import LIST_FILES, package_data_dir

    folder = tmp_path_factory.mktemp("terms")
    for fname in LIST_FILES.values():
        lines = (package_data_dir() / fname).read_text(encoding="utf-8").splitlines()[:40]
        (folder / fname).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def make_config(kit, out: Path, terms: Path, **evaluation) -> EvalConfig:
    sections, _ = kit
    interrogator = {"data_dir": str(terms), "flavor_candidates": 8, "max_chain": 3, "min_chain": 0}
    ev = {"seeds": SEEDS, "out_dir": str(out), "interrogator": interrogator, **evaluation}
    return EvalConfig.model_validate({**{k: sections[k] for k in ("t2i", "clip", "captioner", "vlm", "dino", "vit")}, "evaluation": ev})


def write_images(folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i, name in enumerate(["a.png", "b.png", "sub/c.png"]):
        p = folder / name
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def arpo_record(path: Path, rel: str, steps=3) -> dict:
    """A finished record in the batch job's results.jsonl format (agents.batch_reverse.result_record)."""
    its = []
    for k in range(steps):
        content = ["a thing"] + [f"detail {j}" for j in range(k)]
        its.append({"iteration": k, "content": content, "style": ["oil painting"], "rendered": ", ".join(content + ["oil painting"]),
                    "clip_t": 0.20 + 0.01 * k, "clip_i": 0.50 + 0.02 * k - (0.05 if k == 2 else 0.0), "images": []})
    best = 1  # iteration 2 scored lower
    return {"image_id": content_id(path), "source": rel, "status": "done", "best_iteration": best,
            "prompt": {"content": its[best]["content"], "style": ["oil painting"], "rendered": its[best]["rendered"]},
            "iterations": its, "stop_reason": "max_steps"}


@pytest.fixture
def setup(tmp_path, term_lists):
    images = write_images(tmp_path / "images")
    batch = tmp_path / "batch"
    log = ResultsLog(batch / RESULTS_JSONL)
    for p, rel in zip(images[:2], ["a.png", "b.png"]):
        log.append(arpo_record(p, rel))
    (tmp_path / "hand.csv").write_text("image,prompt\na.png,a hand-made <prompt>\nsub/c.png,another one\nzzz.png,unused\n")
    return tmp_path, images, batch, term_lists


METHODS = "arpo,blip2,vlm,clip_interrogator,file:hand.csv"


async def test_end_to_end_on_the_offline_kit(kit, setup):
    tmp, images, batch, terms = setup
    out = tmp / "eval"
    runs = []

    async def runner(plan, image_dir):  # stands in for the batch job: finishes the one missing image
        runs.append((plan.key, plan.results_dir, image_dir))
        ResultsLog(plan.results_dir / RESULTS_JSONL).append(arpo_record(images[2], "sub/c.png"))

    cfg = make_config(kit, out, terms, arpo_results=str(batch))
    roles = make_roles(kit)
    outcome = await Evaluation(cfg, tmp / "images", out, roles, parse_methods(METHODS), arpo_runner=runner, base_dir=tmp).run()

    assert runs == [("arpo", batch, (tmp / "images").resolve())]
    assert outcome.images == 3 and not outcome.failed
    assert set(outcome.missing) == {"file:hand.csv"} and len(outcome.missing["file:hand.csv"]) == 1  # b.png has no hand prompt
    assert outcome.generated == (3 * 5 - 1) * len(SEEDS)

    # the records: one prompt per (image, method), one seed record per seed
    lines = [json.loads(x) for x in (out / RECORDS_FILE).read_text().splitlines()]
    prompts = [r for r in lines if r["kind"] == "prompt"]
    seeds = [r for r in lines if r["kind"] == "seed"]
    assert len(prompts) == 14 and len(seeds) == 28
    arpo_a = next(r for r in prompts if r["method"] == "arpo" and r["source"] == "a.png")
    assert arpo_a["prompt"] == "a thing, detail 0, oil painting"  # the result's best prompt, reused as is
    hand = next(r for r in prompts if r["method"] == "file:hand.csv" and r["source"] == "a.png")
    assert hand["prompt"] == "a hand-made <prompt>"
    ci = next(r for r in prompts if r["method"] == "clip_interrogator")
    assert ci["prompt"].startswith(ci["extra"]["caption"]) and ci["extra"]["medium"]

    # the numbers are the metrics of the actual images: recompute some directly from the models
    _, m = kit
    seed_rec = next(r for r in seeds if r["method"] == "arpo" and r["image_id"] == arpo_a["image_id"] and r["seed"] == 1)
    generated = np.asarray(Image.open(out / seed_rec["image"]))
    ref_rel = next(p for p in (out / "images").glob("a-*/reference.png"))
    reference = np.asarray(Image.open(ref_rel))
    clip_t = 100 * float(m["clip"].encode_texts([arpo_a["prompt"]])[0] @ m["clip"].encode_images([reference])[0])
    assert arpo_a["clip_t"] == pytest.approx(clip_t, abs=1e-3)
    clip_i = 100 * float(m["clip"].encode_images([generated])[0] @ m["clip"].encode_images([reference])[0])
    assert seed_rec["clip_i"] == pytest.approx(clip_i, abs=1e-3)
    dino = cosine_x100(m["dino"].embed_batch([generated])[0], m["dino"].embed_batch([reference])[0])[0]
    assert seed_rec["dino"] == pytest.approx(dino, abs=1e-3)
    vit = cosine_x100(m["vit"].embed_batch([generated])[0], m["vit"].embed_batch([reference])[0])[0]
    assert seed_rec["vit"] == pytest.approx(vit, abs=1e-3)
    # the same T2I seed gives the same image as the T2I model alone
    again = m["t2i"].generate_batch([(arpo_a["prompt"], 1)])[0]
    assert np.abs(again.astype(int) - generated.astype(int)).max() <= 1

    # Table 4.2: rows in method order, averaged over the 2 images every method has
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["method"] for r in rows] == METHODS.split(",")
    assert {r["n_images"] for r in rows} == {"2"} and {r["n_seeds"] for r in rows} == {"2"}
    for r in rows:
        for col in ("clip_t", "clip_i_mean", "clip_i_std", "dino_mean", "vit_mean"):
            assert np.isfinite(float(r[col]))
    md = (out / "table.md").read_text()
    assert "| Method | CLIP-T | CLIP-I | DINO | ViT | Images |" in md and "Prompts from hand.csv" in md and "±" in md
    # the gallery: reference then each method's image and prompt, all text escaped
    page = (out / "gallery.html").read_text()
    assert page.count('alt="reference"') == 3 and page.count('alt="recreated"') == 14
    assert "a hand-made &lt;prompt&gt;" in page and "<prompt>" not in page
    assert "hand.csv has no prompt for b.png" in page
    assert "Random-weight models serve t2i, vlm, captioner, clip, dino, vit" in page  # the marker at the kit root is seen
    # Figure 4.7 from the recorded iterations: best-so-far CLIP-I rises then stays (iteration 2 was worse)
    curve = [r for r in csv.DictReader((out / "curve.csv").open()) if r["metric"] == "clip_i"]
    assert [float(r["value"]) for r in curve] == pytest.approx([50.0, 52.0, 52.0])
    assert "<polyline" in (out / "curve.svg").read_text()


async def test_rerun_skips_finished_work_and_redoes_only_what_is_missing(kit, setup):
    tmp, images, batch, terms = setup
    out = tmp / "eval"
    cfg = make_config(kit, out, terms, arpo_results=str(batch), run_missing_arpo=False)
    specs = parse_methods(METHODS)
    first = await Evaluation(cfg, tmp / "images", out, make_roles(kit), specs, base_dir=tmp).run()
    assert first.generated == (2 + 3 * 3 + 2) * len(SEEDS)  # arpo lacks c.png (not run), the file lacks b.png

    table = (out / "table.md").read_text()
    roles = make_roles(kit)
    second = await Evaluation(cfg, tmp / "images", out, roles, specs, base_dir=tmp).run()
    assert second.generated == 0 and second.reused == first.generated
    assert roles.t2i.calls["generate"] == 0 and roles.captioner.calls["caption"] == 0 and roles.vlm.calls["chat"] == 0
    assert (out / "table.md").read_text() == table  # same values from the records

    # a crash mid-write: the last line is partial; only that seed is redone
    records = out / RECORDS_FILE
    data = records.read_bytes()
    records.write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 1] + b'{"kind": "seed", "image_')
    roles = make_roles(kit)
    third = await Evaluation(cfg, tmp / "images", out, roles, specs, base_dir=tmp).run()
    assert third.generated == 1 and roles.t2i.calls["generate"] == 1

    # another seed: only the new seed is rendered, prompts are reused
    cfg3 = make_config(kit, out, terms, arpo_results=str(batch), run_missing_arpo=False, seeds=[0, 1, 2])
    roles = make_roles(kit)
    fourth = await Evaluation(cfg3, tmp / "images", out, roles, specs, base_dir=tmp).run()
    assert fourth.generated == first.generated // 2 and roles.vlm.calls["chat"] == 0


async def test_all_metrics_curve_scores_each_step_and_shares_identical_prompts(kit, setup):
    tmp, images, batch, terms = setup
    out = tmp / "eval"
    cfg = make_config(kit, out, terms, arpo_results=str(batch), run_missing_arpo=False, curve="all_metrics", seeds=[0])
    outcome = await Evaluation(cfg, tmp / "images", out, make_roles(kit), parse_methods("arpo"), base_dir=tmp).run()
    # 2 images x (final + steps 0..2); step 1, step 2 and the final prompt are the same text: rendered once
    assert outcome.generated == 2 * 2 and outcome.reused == 2 * 2
    rows = [r for r in csv.DictReader((out / "curve.csv").open())]
    assert {r["metric"] for r in rows} == {"clip_t", "clip_i", "dino", "vit"}
    assert [r["step"] for r in rows if r["metric"] == "dino"] == ["0", "1", "2"]


async def test_missing_arpo_results_without_a_runner_are_a_setup_error(kit, setup):
    from agents.batch_reverse import SetupError

    tmp, _, batch, terms = setup
    cfg = make_config(kit, tmp / "eval", terms, arpo_results=str(batch))
    with pytest.raises(SetupError, match="1 image\\(s\\) have no finished ARPO result"):
        await Evaluation(cfg, tmp / "images", tmp / "eval", make_roles(kit), parse_methods("arpo")).run()


def test_method_specs_are_checked():
    assert [s.kind for s in parse_methods("arpo,arpo:vanilla,blip2,vlm,clip_interrogator,file:x.csv")] == \
        ["arpo", "arpo", "captioner", "vlm", "interrogator", "file"]
    for bad, match in [("gpt4", "unknown method"), ("blip2:x", "unknown method"), ("file:", "needs a CSV"), ("vlm,vlm", "twice"), (",", "no methods")]:
        with pytest.raises(ValueError, match=match):
            parse_methods(bad)


class FailFirst(Counting):
    """A role whose first call of ``method`` raises (a crashed model), then recovers."""

    def __init__(self, inner, method):
        super().__init__(inner)
        self.method = method

    def __getattr__(self, name):
        call = super().__getattr__(name)
        if name != self.method:
            return call

        async def failing(*args, **kwargs):
            if self.calls[name] == 0:
                self.calls[name] += 1
                raise RuntimeError("model <crashed>")
            return await call(*args, **kwargs)
        return failing


async def test_a_failing_pair_is_reported_and_retried_by_the_next_run(kit, setup):
    tmp, _, batch, terms = setup
    out = tmp / "eval"
    cfg = make_config(kit, out, terms, seeds=[0])
    roles = make_roles(kit)
    roles.vlm = FailFirst(roles.vlm.inner, "chat")
    first = await Evaluation(cfg, tmp / "images", out, roles, parse_methods("blip2,vlm")).run()
    assert first.exit_code == 1 and len(first.failed["vlm"]) == 1
    assert "RuntimeError: model <crashed>" in next(iter(first.failed["vlm"].values()))
    assert "model &lt;crashed&gt;" in (out / "gallery.html").read_text()
    assert [r["n_images"] for r in csv.DictReader((out / "table.csv").open())] == ["2", "2"]  # common images only
    second = await Evaluation(cfg, tmp / "images", out, make_roles(kit), parse_methods("blip2,vlm")).run()
    assert second.exit_code == 0 and second.generated == 1
