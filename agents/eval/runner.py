"""The evaluation run: every method's prompt for every image, rendered at every seed and
scored, then the table, the gallery and the step curve.

Resumable like the batch job: each prompt and each (image, method, seed) score is a
record in ``eval_records.jsonl`` as soon as it is known, and a rerun with the same
output folder skips what is recorded (see agents/eval/records.py). Errors of one
(image, method) are reported and retried by the next run; they never stop the others.
Graph-free and model-free: the roles are passed in (Ray actor clients from
agents.evaluate, or in-process servers in tests).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

import numpy as np

from agents.batch.errors import SetupError
from agents.batch.plan import WorkItem, plan_work
from agents.batch.runner import prepare_reference
from agents.eval import curve as curve_mod
from agents.eval import table as table_mod
from agents.eval.arpo_source import ArpoPlan, ArpoSource, ArpoStepSource, last_step, load_results, plan_arpo
from agents.eval.config import EvalConfig
from core.job_submit import relative_output_problem
from agents.eval.gallery import render_gallery
from agents.eval.interrogator import load_term_lists
from agents.eval.methods import (CaptionerSource, EvalImage, FileSource, InterrogatorSource, MethodSpec, NoPrompt,
                                 VlmSource)
from agents.eval.metrics import CLIP_I, CLIP_T, DINO, VIT, image_fidelity
from agents.eval.records import RECORDS_FILE, EvalRecords, fingerprint
from agents.images import ImageLoadError, configure_pillow_limit, load_rgb, save_png
from agents.browser.report import random_weight_roles
from agents.browser.results import atomic_write_bytes, atomic_write_text, exclusive_output, slugify

log = logging.getLogger(__name__)

TABLE_MD, TABLE_CSV, GALLERY_HTML, CURVE_SVG, CURVE_CSV = "table.md", "table.csv", "gallery.html", "curve.svg", "curve.csv"

ArpoRunner = Callable[[ArpoPlan, Path], Awaitable[None]]


@dataclass
class EvalRoles:
    """The role clients the evaluation calls (only those its methods need must be set)."""

    t2i: Any
    clip: Any
    dino: Any
    vit: Any
    captioner: Any = None
    vlm: Any = None


@dataclass
class EvalOutcome:
    images: int
    methods: list[str]
    generated: int = 0  # seed records computed in this run
    reused: int = 0  # seed records already there (or shared with an identical prompt)
    missing: dict[str, dict[str, str]] = field(default_factory=dict)  # method -> image id -> why
    failed: dict[str, dict[str, str]] = field(default_factory=dict)  # method -> image id -> error
    outputs: dict[str, Path] = field(default_factory=dict)
    rows: list = field(default_factory=list)  # the table's rows (agents.eval.table.Row), for tracking

    @property
    def exit_code(self) -> int:
        return 1 if any(self.failed.values()) else 0


def needed_roles(specs: list[MethodSpec]) -> set[str]:
    """Roles the methods need besides t2i, clip, dino and vit."""
    need = set()
    for s in specs:
        if s.kind in ("captioner", "interrogator"):
            need.add("captioner")
        if s.kind == "vlm":
            need.add("vlm")
    return need


def method_dir_name(key: str) -> str:
    slug = slugify(key, max_len=40)
    return slug if slug == key else f"{slug}-{fingerprint(key)[:6]}"


def check_folders(image_dir: Path, out_dir: Path) -> None:
    if out_dir == image_dir or image_dir in out_dir.parents:
        # The batch job run for missing ARPO results would take the evaluation's images for references.
        raise SetupError(f"the output folder {out_dir} is inside the image folder {image_dir}; put it elsewhere")


def preflight(cfg: EvalConfig, image_dir: Path, specs: list[MethodSpec]) -> tuple[contextlib.ExitStack, list[WorkItem]]:
    """Every check that needs no model, before any loads: the folders, the output folder's lock (held in the
    returned stack: pass ``lock_held=True`` to :class:`Evaluation`), usable reference images (the plan is
    returned: pass it as ``plan`` so the folder is hashed once), and the checkpoint database of each ARPO
    variant whose missing results the batch job will compute."""
    from agents.checkpointing import check_checkpointer
    from agents.browser.results import OutputFolderBusy

    from agents.local_models import missing_models_problem

    problem = missing_models_problem(cfg)
    if problem:
        raise SetupError(problem)
    outputs = [("evaluation.out_dir (--out)", cfg.evaluation.out_dir)]
    outputs += [(f"evaluation.arpo_variants.{name}.results_dir", v.results_dir)
                for name, v in cfg.evaluation.arpo_variants.items() if v.results_dir]
    for key, value in outputs:
        problem = relative_output_problem(key, value)
        if problem:
            raise SetupError(problem)
    image_dir, out_dir = Path(image_dir).resolve(), Path(cfg.evaluation.out_dir).resolve()
    check_folders(image_dir, out_dir)
    stack = contextlib.ExitStack()
    try:
        try:
            stack.enter_context(exclusive_output(out_dir))
        except OutputFolderBusy as exc:
            raise SetupError(str(exc)) from None
        items = plan_work(image_dir, out_dir, cfg.job.max_file_bytes)
        if not any(not it.read_error for it in items):
            raise SetupError(f"{image_dir}: no usable reference images")
        for spec in (s for s in specs if s.kind == "arpo"):
            plan = plan_arpo(spec, cfg, out_dir)
            if plan.run_missing:
                try:
                    check_checkpointer(plan.cfg.job.checkpoint, plan.results_dir)
                except SetupError as exc:  # CheckpointUnavailable: say which method's database
                    raise SetupError(f"method {spec.key!r}: {exc}") from None
    except BaseException:
        stack.close()
        raise
    return stack, items


class Evaluation:
    """One run over one image folder into one output folder."""

    def __init__(self, cfg: EvalConfig, image_dir: Path, out_dir: Path, roles: EvalRoles, specs: list[MethodSpec],
                 arpo_runner: Optional[ArpoRunner] = None, base_dir: Optional[Path] = None, lock_held: bool = False,
                 plan: Optional[list[WorkItem]] = None):
        self.lock_held = lock_held  # the caller holds out_dir's lock (preflight), taken before the models loaded
        self._plan = plan  # the image folder's work items, made once (by preflight, or at the first use)
        self.cfg, self.ev = cfg, cfg.evaluation
        self.image_dir, self.out_dir = Path(image_dir).resolve(), Path(out_dir).resolve()
        self.roles, self.specs, self.arpo_runner = roles, specs, arpo_runner
        self.base_dir = base_dir or Path.cwd()
        self.seeds = list(self.ev.seeds)
        self.records: Optional[EvalRecords] = None
        # (image_id, metric) -> task computing the reference embedding once per run
        self._ref_embeddings: dict[tuple[str, str], asyncio.Task] = {}
        # seed fingerprint -> future of its record while one method renders it (others wait for it)
        self._inflight: dict[str, asyncio.Future] = {}
        gen = cfg.t2i.model_dump(mode="json", exclude={"batching", "resources", "device"})
        self._seed_fp_base = fingerprint(gen, self._clip_fp(), cfg.dino.model_dump(mode="json", include={"model", "pooling"}),
                                         cfg.vit.model_dump(mode="json", include={"model", "pooling"}))

    def _clip_fp(self) -> dict:
        return self.cfg.clip.model_dump(mode="json", include={"model_name", "pretrained", "model_config_dir", "precision"})

    # ------------------------------------------------------------------ setup
    async def _arpo_sources(self) -> list[ArpoSource]:
        sources, ids = [], None
        for spec in (s for s in self.specs if s.kind == "arpo"):
            plan = plan_arpo(spec, self.cfg, self.out_dir)
            results = load_results(plan.results_dir)
            if ids is None:
                ids = {it.image_id for it in self._work_items() if not it.read_error}
            missing = ids - set(results)
            if missing and plan.run_missing:
                if self.arpo_runner is None:
                    raise SetupError(f"method {spec.key!r}: {len(missing)} image(s) have no finished ARPO result in "
                                     f"{plan.results_dir} and no batch runner was given")
                log.info("method %s: running ARPO for %d image(s) into %s", spec.key, len(missing), plan.results_dir)
                await self.arpo_runner(plan, self.image_dir)
                results = load_results(plan.results_dir)
            sources.append(ArpoSource(plan, results))
        return sources

    def _sources(self, arpo: list[ArpoSource]) -> list:
        by_key = {s.key: s for s in arpo}
        lists = None
        out = []
        for spec in self.specs:
            if spec.kind == "arpo":
                out.append(by_key[spec.key])
            elif spec.kind == "captioner":
                out.append(CaptionerSource(spec, self.cfg, self._role("captioner", spec)))
            elif spec.kind == "vlm":
                out.append(VlmSource(spec, self.cfg, self._role("vlm", spec)))
            elif spec.kind == "interrogator":
                lists = lists or load_term_lists(self.ev.interrogator)
                out.append(InterrogatorSource(spec, self.cfg, lists, self._role("captioner", spec), self.roles.clip, self.roles.t2i))
            elif spec.kind == "file":
                out.append(FileSource(spec, self.cfg, self.base_dir))
        return out

    def _role(self, name: str, spec: MethodSpec):
        role = getattr(self.roles, name)
        if role is None:
            raise SetupError(f"method {spec.key!r} needs the {name} role, which was not started")
        return role

    def _work_items(self) -> list[WorkItem]:
        """The image folder's plan, hashed once per run (every file's content is read)."""
        if self._plan is None:
            self._plan = plan_work(self.image_dir, self.out_dir, self.cfg.job.max_file_bytes)
        return self._plan

    def _images(self, outcome: EvalOutcome) -> list[EvalImage]:
        configure_pillow_limit(self.cfg.job.max_image_pixels)
        images = []
        for item in self._work_items():
            try:
                if item.read_error:
                    outcome.failed.setdefault("<reference>", {})[item.image_id] = item.read_error
                    continue
                ref_path = prepare_reference(item, self.cfg.job.max_image_pixels, self.cfg.job.reference_max_side)
                pixels = load_rgb(ref_path, self.cfg.job.max_image_pixels)
            except ImageLoadError as exc:
                outcome.failed.setdefault("<reference>", {})[item.image_id] = f"{item.source.rel}: {exc}"
                continue
            images.append(EvalImage(image_id=item.image_id, rel=item.source.rel, folder=item.folder,
                                    reference_rel=ref_path.relative_to(self.out_dir).as_posix(), reference=pixels))
        return images

    # ------------------------------------------------------------------ one (image, method)
    async def _reference_embedding(self, image: EvalImage, metric: str) -> np.ndarray:
        key = (image.image_id, metric)
        if key not in self._ref_embeddings:
            role = self.roles.dino if metric == DINO else self.roles.vit
            self._ref_embeddings[key] = asyncio.ensure_future(role.embed_images([image.reference]))
        return (await self._ref_embeddings[key])[0]

    async def _prompt_record(self, image: EvalImage, source) -> dict:
        cache_key = source.cache_key(image) if hasattr(source, "cache_key") else None
        fp = fingerprint(source.fingerprint, cache_key, image.image_id, self._clip_fp())
        rec = self.records.prompt(image.image_id, source.key, fp)
        if rec is not None:
            return rec
        prompt, extra = await source.prompt(image)
        score = (await self.roles.clip.text_image_scores([prompt], image.reference, image_key=image.image_id))[0]
        return self.records.append({"kind": "prompt", "image_id": image.image_id, "method": source.key, "fp": fp,
                                    "source": image.rel, "prompt": prompt, CLIP_T: 100.0 * float(score), "extra": extra})

    async def evaluate_one(self, image: EvalImage, source, outcome: EvalOutcome) -> Optional[dict]:
        """Prompt record and seed records of one (image, method); None when the method has no prompt."""
        try:
            prec = await self._prompt_record(image, source)
        except NoPrompt as exc:
            outcome.missing.setdefault(source.key, {})[image.image_id] = str(exc)
            return None
        prompt = prec["prompt"]
        seed_recs, todo, elsewhere = {}, [], []
        for seed in self.seeds:
            fp = fingerprint(self._seed_fp_base, image.image_id, prompt, seed)
            rec = self.records.seed(image.image_id, source.key, seed, fp)
            if rec is None and (shared := self.records.seed_by_fp(fp)) is not None:
                rec = self.records.append({**shared, "method": source.key})  # same prompt elsewhere: same image
            if rec is not None:
                seed_recs[seed] = rec
                outcome.reused += 1
            elif fp in self._inflight:  # another method is rendering this very prompt and seed right now
                elsewhere.append((seed, self._inflight[fp]))
            else:
                todo.append((seed, fp))
                self._inflight[fp] = asyncio.get_running_loop().create_future()
        if todo:
            try:
                done = await self._render_and_score(image, source.key, prompt, todo)
            except BaseException as exc:
                for _, fp in todo:
                    fut = self._inflight.pop(fp)
                    fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
                    fut.exception()  # retrieved: waiting methods see it, nobody else needs to
                raise
            for seed, fp in todo:
                self._inflight.pop(fp).set_result(done[seed])
            seed_recs.update(done)
            outcome.generated += len(todo)
        for seed, fut in elsewhere:
            shared = await fut
            seed_recs[seed] = self.records.append({**shared, "method": source.key})
            outcome.reused += 1
        return {"prompt": prompt, CLIP_T: prec[CLIP_T], "extra": prec.get("extra") or {},
                "seeds": {s: seed_recs[s] for s in self.seeds}}

    async def _render_and_score(self, image: EvalImage, key: str, prompt: str, todo: list[tuple[int, str]]) -> dict[int, dict]:
        seeds = [s for s, _ in todo]
        generated = await self.roles.t2i.generate(prompt, seeds)
        if len(generated) != len(seeds):
            raise RuntimeError(f"t2i returned {len(generated)} images for {len(seeds)} seeds")
        clip_i, dino_emb, vit_emb, dino_ref, vit_ref = await asyncio.gather(
            self.roles.clip.image_image_scores(generated, image.reference, reference_key=image.image_id),
            self.roles.dino.embed_images(generated), self.roles.vit.embed_images(generated),
            self._reference_embedding(image, DINO), self._reference_embedding(image, VIT))
        dino_vals, vit_vals = image_fidelity(dino_emb, dino_ref), image_fidelity(vit_emb, vit_ref)
        folder = image.folder / method_dir_name(key)
        out = {}
        for j, (seed, fp) in enumerate(todo):
            path = folder / f"seed{seed}.png"
            atomic_write_bytes(path, save_png(generated[j]))
            out[seed] = self.records.append({
                "kind": "seed", "image_id": image.image_id, "method": key, "seed": seed, "fp": fp,
                CLIP_I: 100.0 * float(clip_i[j]), DINO: float(dino_vals[j]), VIT: float(vit_vals[j]),
                "image": path.relative_to(self.out_dir).as_posix()})
        return out

    # ------------------------------------------------------------------ the run
    async def run(self) -> EvalOutcome:
        check_folders(self.image_dir, self.out_dir)
        with contextlib.nullcontext() if self.lock_held else exclusive_output(self.out_dir):
            self.records = EvalRecords(self.out_dir / RECORDS_FILE)
            outcome = EvalOutcome(images=0, methods=[s.key for s in self.specs])
            arpo = await self._arpo_sources()
            sources = self._sources(arpo)
            step_sources: dict[str, list[ArpoStepSource]] = {}
            if self.ev.curve == "all_metrics":
                for a in arpo:
                    step_sources[a.key] = [ArpoStepSource(a, k) for k in range(last_step(a.results) + 1)]
            images = self._images(outcome)
            if not images:
                raise SetupError(f"{self.image_dir}: no usable reference images")
            outcome.images = len(images)
            values: dict[str, dict[str, dict]] = {}
            all_sources = [*sources, *(s for group in step_sources.values() for s in group)]
            gate = asyncio.Semaphore(self.ev.concurrency)

            async def one(image: EvalImage, source) -> None:
                async with gate:
                    try:
                        value = await self.evaluate_one(image, source, outcome)
                    except Exception as exc:  # noqa: BLE001 - one (image, method) failing is reported, not fatal
                        log.warning("%s on %s failed: %s: %s", source.key, image.rel, type(exc).__name__, exc)
                        outcome.failed.setdefault(source.key, {})[image.image_id] = f"{type(exc).__name__}: {exc}"
                        return
                if value is not None:
                    values.setdefault(source.key, {})[image.image_id] = value

            tasks = [asyncio.ensure_future(one(im, src)) for im in images for src in all_sources]
            try:
                await asyncio.gather(*tasks)
            finally:
                for t in (*tasks, *self._ref_embeddings.values()):
                    t.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.gather(*tasks, *self._ref_embeddings.values(), return_exceptions=True)
            for source in sources:
                if isinstance(source, FileSource) and source.unused():
                    log.warning("%s: prompts for images not in %s: %s", source.path, self.image_dir, ", ".join(source.unused()))
            outcome.outputs = self.write_outputs(images, sources, arpo, step_sources, values, outcome)
        return outcome

    def write_outputs(self, images, sources, arpo, step_sources, values, outcome) -> dict[str, Path]:
        labels = {s.key: s.label for s in sources}
        rows = outcome.rows = table_mod.summarise(values, labels, self.seeds, self.ev.table_images)
        note = _missing_note(outcome, labels)
        paths = {name: self.out_dir / name for name in (TABLE_MD, TABLE_CSV, GALLERY_HTML, CURVE_SVG, CURVE_CSV)}
        atomic_write_text(paths[TABLE_MD], table_mod.render_markdown(rows, self.seeds, note))
        atomic_write_text(paths[TABLE_CSV], table_mod.render_csv(rows))
        seed = self.ev.gallery_seed if self.ev.gallery_seed is not None else self.seeds[0]
        if seed not in self.seeds:
            raise SetupError(f"evaluation.gallery_seed {seed} is not one of the seeds {self.seeds}")
        why = {key: {**outcome.missing.get(key, {}), **outcome.failed.get(key, {})} for key in labels}
        atomic_write_text(paths[GALLERY_HTML], render_gallery(images, labels, values, rows, seed, self._random_roles(), why))
        series = []
        for a in arpo:
            if a.key in step_sources:
                per_step = {src.step: values.get(src.key, {}) for src in step_sources[a.key]}
                series.extend(curve_mod.evaluated_series(a.label, per_step, self.seeds))
            else:
                ids = {im.image_id for im in images}
                series.extend(curve_mod.recorded_series(a.label, {i: r for i, r in a.results.items() if i in ids}))
        if arpo:
            atomic_write_text(paths[CURVE_SVG], curve_mod.render_svg(series))
            atomic_write_text(paths[CURVE_CSV], curve_mod.render_csv(series))
        else:
            paths.pop(CURVE_SVG), paths.pop(CURVE_CSV)
        return paths

    def _random_roles(self) -> list[str]:
        # The batch report's rule (a marker in the model folder or the kit root above it).
        from actors.offline_kit import is_random_weight_model

        return random_weight_roles(self.cfg) + [name for name in ("dino", "vit") if is_random_weight_model(getattr(self.cfg, name).model)]


def _missing_note(outcome: EvalOutcome, labels: dict[str, str]) -> str:
    lines = []
    for kind, table in (("no prompt", outcome.missing), ("failed", outcome.failed)):
        for key, per_image in table.items():
            if per_image and key in labels:
                lines.append(f"- {labels[key]}: {len(per_image)} image(s) {kind}")
    return ("\nNot in the averages:\n" + "\n".join(lines)) if lines else ""
