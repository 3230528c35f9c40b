"""A long run's state carried from one machine to the next in a small folder that can be committed.

Why: this workplace gives each session a fresh 2-core machine for about three hours, and issue #28's six-seed run
needs about 11 CPU-hours; a work folder left on a machine is gone with it. ``pack`` copies what another machine
needs to continue the run: every finished unit's records and markers, and only the weights that an unfinished
unit still reads —

* the feature network (every score reads it);
* the pretrained model's ``final/`` while a fine-tune, the noise floor, the pretraining curve or a fine-tuning
  curve is left, its ``snapshots/`` while the pretraining curve is left;
* a fine-tuned model's ``final/`` while its λ search or evaluation (or, for the first training seed, its
  diagnostics or samples) is left, its ``snapshots/`` while its fine-tuning curve is left;
* an unfinished pretraining whole (its resume checkpoint: an hour and more of CPU);
* an unfinished unit's partial records (``units.PartialRecords``: the scores an unfinished λ search or
  evaluation has made) with its start marker, so it resumes there. Other unfinished units are left out and
  redone (a fine-tune is minutes).

``unpack`` copies a carried folder into a work folder that does not exist yet (never over a run in progress).
Nothing here changes a unit's result: a carried unit is the same files, and its fingerprint still decides
whether it is done for the config at hand.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from benchmarks.exposure_bias import units
from benchmarks.exposure_bias.trainer import CKPT, FINAL, SNAPSHOTS

WEIGHT_DIRS = (CKPT, FINAL, SNAPSHOTS, CKPT + ".tmp")
MANIFEST = "CARRY.json"


@dataclass
class Unit:
    """One resumable unit: its folder (relative to the work folder) and the fingerprint that makes it done."""
    folder: Path
    fp: str


@dataclass
class WeightNeed:
    """A weights folder of a unit and the units that read it."""
    path: Path
    readers: list[Unit] = field(default_factory=list)


def units_and_needs(protocol) -> tuple[list[Unit], list[WeightNeed]]:
    """Every unit of ``protocol``'s config and every weights folder with its readers (a reader is a unit whose
    body loads those weights: see the stages in :mod:`benchmarks.exposure_bias.protocol`)."""
    cfg, p = protocol.cfg, protocol
    rel = lambda folder: Path(folder).relative_to(p.work)  # noqa: E731
    pretrained = Unit(rel(p.work / "models" / "pretrained"), p.fp("pretrain"))
    all_units = [Unit(Path("feature_net"), p.fp("feature_net")), pretrained]
    pre_final, pre_snaps = WeightNeed(pretrained.folder / FINAL), WeightNeed(pretrained.folder / SNAPSHOTS)
    needs = [pre_final, pre_snaps]
    if cfg.pretrain_curve is not None:
        u = Unit(Path("pretrain_curve"), p.fp("pretrain_curve"))
        all_units.append(u)
        pre_final.readers.append(u)
        pre_snaps.readers.append(u)
    if cfg.noise_floor is not None:
        u = Unit(Path("noise_floor"), p.fp("noise_floor"))
        all_units.append(u)
        pre_final.readers.append(u)
    searched = set(cfg.searched_labels())
    curve_labels = set(cfg.curve.labels) if cfg.curve is not None else set()
    for seed, v in p.seeded_variants():
        model = Unit(rel(p.unit_dir("models", v, seed)), p.fp("finetune", v, seed))
        final, snaps = WeightNeed(model.folder / FINAL), WeightNeed(model.folder / SNAPSHOTS)
        needs += [final, snaps]
        all_units.append(model)
        pre_final.readers.append(model)
        readers = [Unit(rel(p.unit_dir("eval", v, seed)), p.fp("evaluate", v, seed))]
        if v.label in searched:
            readers.append(Unit(rel(p.unit_dir("lambda", v, seed)), p.fp("lambda", v, seed)))
        if seed == p.first_seed:
            if cfg.diagnostics is not None:
                readers.append(Unit(Path("diagnostics") / v.label, p.fp("diagnostics", v, seed)))
            if cfg.samples is not None:
                readers.append(Unit(Path("samples") / v.label, p.fp("samples", v, seed)))
            if v.label in curve_labels:
                curve = Unit(Path("curve") / v.label, p.fp("curve", v, seed))
                all_units.append(curve)
                pre_final.readers.append(curve)  # the curve's step 0
                snaps.readers.append(curve)
        final.readers += readers
        all_units += readers
    return all_units, needs


def _done(work: Path, unit: Unit) -> bool:
    return units.is_done(work / unit.folder, unit.fp)


def _copy_files(src: Path, dest: Path, skip_dirs: tuple[str, ...] = ()) -> int:
    """Copy ``src``'s files to ``dest``, leaving out the top-level folders named in ``skip_dirs``; returns bytes."""
    total = 0
    for path in sorted(src.rglob("*")):
        relative = path.relative_to(src)
        if relative.parts[0] in skip_dirs or not path.is_file():
            continue
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        total += path.stat().st_size
    return total


def pack(protocol, dest: Path, force: bool = False) -> dict:
    """Write the carried state of ``protocol.work`` to ``dest`` (replacing it); returns what was carried.

    Refuses (``ValueError``) when ``dest`` holds a finished unit the work folder lacks: packing a work folder
    that was not unpacked from ``dest`` would throw that unit away (``force`` does it anyway)."""
    work, dest = Path(protocol.work), Path(dest)
    all_units, needs = units_and_needs(protocol)
    if not force and dest.is_dir():
        lost = [str(u.folder) for u in all_units if _done(dest, u) and not _done(work, u)]
        if lost:
            raise ValueError(f"{dest} holds finished units that {work} lacks ({', '.join(lost[:5])}"
                             f"{' …' if len(lost) > 5 else ''}): unpack it first, or pass force")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    carried, left, size = [], [], 0
    for u in all_units:
        src = work / u.folder
        if _done(work, u):
            carried.append(str(u.folder))
            size += _copy_files(src, tmp / u.folder, skip_dirs=WEIGHT_DIRS)
        elif u.folder == Path("models") / "pretrained" and (src / "STARTED.json").is_file():
            left.append(f"{u.folder} (unfinished: carried whole, to resume)")
            size += _copy_files(src, tmp / u.folder)
        elif (src / units.PARTIAL).is_file() and (src / units.STARTED).is_file():
            records = len(units.PartialRecords(src, repair=False).values)
            left.append(f"{u.folder} (unfinished: {records} partial records carried, to resume)")
            (tmp / u.folder).mkdir(parents=True, exist_ok=True)
            for name in (units.STARTED, units.PARTIAL):
                shutil.copy2(src / name, tmp / u.folder / name)
                size += (src / name).stat().st_size
    kept = []
    for need in needs:  # each weights folder once; an unfinished owner's went with it above
        owner_done = (work / need.path.parent / units.MARKER).is_file()
        if owner_done and (work / need.path).is_dir() and any(not _done(work, r) for r in need.readers):
            size += _copy_files(work / need.path, tmp / need.path)
            kept.append(str(need.path))
    manifest = {"units_done": len(carried), "units_in_config": len(all_units), "weights_kept": kept,
                "unfinished": left, "bytes": size}
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return manifest


def unpack(src: Path, work: Path) -> Optional[dict]:
    """Copy a carried folder into ``work``, which must not exist yet; returns the carried manifest."""
    src, work = Path(src), Path(work)
    if not (src / MANIFEST).is_file():
        raise ValueError(f"{src}: not a carried run (no {MANIFEST})")
    if work.exists() and any(work.iterdir()):
        raise ValueError(f"{work} exists and is not empty: a carried run is unpacked only into a new work folder")
    _copy_files(src, work)
    (work / MANIFEST).unlink()
    return json.loads((src / MANIFEST).read_text())
