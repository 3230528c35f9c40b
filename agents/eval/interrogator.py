"""The CLIP-Interrogator baseline (thesis [72]), re-implemented on this project's roles.

Method and term lists: pharmapsychotic/clip-interrogator (MIT licence), version 0.6.0;
the lists (artists, flavors, mediums, movements) are read from the installed package's
``clip_interrogator/data`` folder. The package itself is not used to score: it loads
its own CLIP and BLIP models and downloads precomputed embeddings, whereas here the
caption comes from the captioner role and every similarity from the CLIP scorer role
(which batches and caches text embeddings), so the baseline uses the same models as
ARPO.

The prompt, following the package's "classic" and "best" modes:

1. caption the image (captioner role);
2. rank each list by CLIP similarity with the image and take the best medium, the best
   artist (as "by X") and the best movement: ``caption, medium by artist, movement``
   (``caption by artist, movement`` when the caption already starts with the medium);
3. rank the flavors, keep the ``flavor_candidates`` best, and chain them greedily
   (the package's ``chain``): at each step append the flavor that maximises the
   similarity of ``prompt, flavor``; keep it when the similarity rises (the first
   ``min_chain`` steps keep it regardless, as the package does), stop when it does not,
   after ``max_chain`` steps, or when no flavor fits the T2I token limit any more;
4. return the best-scoring prompt seen: the caption, the step-2 prompt or a chained one.

Unlike the package, a flavor is only tried when the longer prompt still fits the token
limit (the package lets the last flavor be cut off by the tokenizer).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Optional, Sequence

import numpy as np
from pydantic import Field

from core.config import StrictModel

ScoreFn = Callable[[list[str]], Awaitable[list[float]]]  # texts -> similarity with the image
CountFn = Callable[[list[str]], Awaitable[list[int]]]  # texts -> token counts

LIST_FILES = {"mediums": "mediums.txt", "artists": "artists.txt", "movements": "movements.txt", "flavors": "flavors.txt"}


class InterrogatorConfig(StrictModel):
    """The CLIP-Interrogator baseline's settings."""

    data_dir: Optional[str] = Field(None, description="Folder with mediums.txt, artists.txt, movements.txt and flavors.txt; None: the installed clip-interrogator package's data folder.")
    max_flavors: Optional[int] = Field(None, ge=1, description="Use only the first N lines of flavors.txt (the list is ordered roughly by popularity; it has 100,970 terms). None: all of them. The CPU/offline profiles set a few hundred, since every term is one CLIP text encoding.")
    flavor_candidates: int = Field(2048, ge=1, description="Best-ranked flavors that enter the greedy chain (the package's flavor_intermediate_count).")
    min_chain: int = Field(8, ge=0, description="Chain steps that keep the best flavor even when the similarity does not rise (the package's min_flavors).")
    max_chain: int = Field(32, ge=0, description="Most flavors chained (the package's max_flavors).")
    score_batch_size: int = Field(4096, ge=1, description="Texts per call to the CLIP scorer when ranking a list.")


@dataclass(frozen=True)
class TermLists:
    mediums: tuple[str, ...]
    artists: tuple[str, ...]
    movements: tuple[str, ...]
    flavors: tuple[str, ...]


def package_data_dir() -> Path:
    """``clip_interrogator/data`` of the installed package, found without importing it
    (its ``__init__`` imports open_clip, requests and the BLIP models)."""
    spec = importlib.util.find_spec("clip_interrogator")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the clip-interrogator package is not installed (pip install --no-deps clip-interrogator==0.6.0) "
                                "and interrogator.data_dir is not set")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def read_list(path: Path) -> tuple[str, ...]:
    """One term per line, stripped, blank lines and repeats dropped (first occurrence kept)."""
    if not path.is_file():
        raise FileNotFoundError(f"term list {path} does not exist")
    lines = (line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines())
    terms = tuple(dict.fromkeys(t for t in lines if t))
    if not terms:
        raise ValueError(f"term list {path} is empty")
    return terms


def load_term_lists(cfg: InterrogatorConfig) -> TermLists:
    folder = Path(cfg.data_dir).expanduser() if cfg.data_dir else package_data_dir()
    lists = {name: read_list(folder / fname) for name, fname in LIST_FILES.items()}
    if cfg.max_flavors is not None:
        lists["flavors"] = lists["flavors"][: cfg.max_flavors]
    return TermLists(**lists)


@dataclass
class Interrogation:
    """What the method chose, for the records and the gallery."""

    prompt: str
    score: float
    caption: str
    medium: str
    artist: str
    movement: str
    flavors: list[str] = field(default_factory=list)
    scorer_calls: int = 0

    def to_dict(self) -> dict:
        return {"caption": self.caption, "medium": self.medium, "artist": self.artist, "movement": self.movement,
                "flavors": list(self.flavors), "score": self.score, "scorer_calls": self.scorer_calls}


class _Counted:
    """The scorer with a call counter and chunking to ``batch`` texts per call."""

    def __init__(self, score: ScoreFn, batch: int):
        self._score, self._batch, self.calls = score, batch, 0

    async def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out: list[float] = []
        for start in range(0, len(texts), self._batch):
            chunk = list(texts[start:start + self._batch])
            scores = await self._score(chunk)
            self.calls += 1
            if len(scores) != len(chunk):
                raise RuntimeError(f"the scorer returned {len(scores)} scores for {len(chunk)} texts")
            out.extend(float(s) for s in scores)
        return np.asarray(out, dtype=np.float64)


def top_k(terms: Sequence[str], scores: np.ndarray, k: int) -> list[str]:
    """The k best terms, best first; ties keep list order (stable, deterministic)."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [terms[i] for i in order]


def classic_prompt(caption: str, medium: str, artist: str, movement: str) -> str:
    if caption.lower().startswith(medium.lower()):
        return f"{caption} {artist}, {movement}"
    return f"{caption}, {medium} {artist}, {movement}"


async def fit_prefix(prompt: str, count: CountFn, limit: int) -> str:
    """Drop trailing comma-separated parts until ``prompt`` fits ``limit`` tokens (the package's _truncate_to_fit)."""
    parts = prompt.split(", ")
    candidates = [", ".join(parts[: n]) for n in range(len(parts), 0, -1)]
    for text, n in zip(candidates, await count(candidates)):
        if n <= limit:
            return text
    return parts[0]  # the caption alone; the T2I tokenizer truncates it like any long prompt


async def chain_flavors(start: str, start_score: float, flavors: Sequence[str], score: _Counted, count: CountFn,
                        limit: int, min_chain: int, max_chain: int) -> tuple[str, float, list[str]]:
    """Greedy chaining (the package's ``chain``): best prompt seen, its score, the flavors it added."""
    remaining = list(flavors)
    curr, curr_score, curr_added = start, start_score, []
    best, best_score, best_added = start, start_score, []
    for step in range(max_chain):
        trials = [f"{curr}, {f}" for f in remaining]
        if not trials:
            break
        fits = [n <= limit for n in await count(trials)]
        options = [(f, t) for f, t, ok in zip(remaining, trials, fits) if ok]
        if not options:
            break
        scores = await score([t for _, t in options])
        pick = int(np.argmax(scores))  # first maximum: deterministic
        flavor, prompt, s = options[pick][0], options[pick][1], float(scores[pick])
        if s > best_score:
            best, best_score, best_added = prompt, s, curr_added + [flavor]
        if not (s > curr_score or step < min_chain):
            break
        curr, curr_score, curr_added = prompt, s, curr_added + [flavor]
        remaining.remove(flavor)
    return best, best_score, best_added


async def interrogate(caption: str, lists: TermLists, cfg: InterrogatorConfig, score_texts: ScoreFn,
                      count_tokens: CountFn, token_limit: int) -> Interrogation:
    """Build the CLIP-Interrogator prompt for one image.

    ``score_texts`` gives each text's CLIP similarity with the image (any monotone scale),
    ``count_tokens`` each text's token count under the T2I tokenizer; ``token_limit`` is
    the most tokens a prompt may have.
    """
    caption = " ".join(caption.split())
    if not caption:
        raise ValueError("the caption is empty")
    score = _Counted(score_texts, cfg.score_batch_size)
    medium = top_k(lists.mediums, await score(lists.mediums), 1)[0]
    artist_terms = [f"by {a}" for a in lists.artists]
    artist = top_k(artist_terms, await score(artist_terms), 1)[0]
    movement = top_k(lists.movements, await score(lists.movements), 1)[0]
    flavors = top_k(lists.flavors, await score(lists.flavors), cfg.flavor_candidates)

    base = await fit_prefix(classic_prompt(caption, medium, artist, movement), count_tokens, token_limit)
    caption_score, base_score = (float(s) for s in await score([caption, base]))
    best, best_score, added = await chain_flavors(base, base_score, flavors, score, count_tokens, token_limit,
                                                  cfg.min_chain, cfg.max_chain)
    if caption_score > best_score:  # the package also keeps the bare caption as a candidate
        best, best_score, added = caption, caption_score, []
    return Interrogation(prompt=best, score=best_score, caption=caption, medium=medium, artist=artist,
                         movement=movement, flavors=added, scorer_calls=score.calls)
