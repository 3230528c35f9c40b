"""Tokenizer material for the offline kit, built from files already installed (no downloads).

open_clip ships the real CLIP BPE merges (``bpe_simple_vocab_16e6.txt.gz``, 49,408-token
vocabulary). From it we write the ``vocab.json`` + ``merges.txt`` pair that
``CLIPTokenizer.from_pretrained`` reads, so the tiny text-to-image pipeline tokenizes
exactly as Stable Diffusion does (same ids as open_clip's tokenizer) and ordinary English
prompts get distinct ids. Its whole-word entries also serve as an English word list for
training small byte-level BPE vocabularies for other tiny models.

Note the transformers-5 trap: ``CLIPTokenizer(vocab_file=..., merges_file=...)`` silently
ignores the files; always load the folder with ``from_pretrained``.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

CLIP_BOS = "<|startoftext|>"
CLIP_EOS = "<|endoftext|>"
# The merges file has a header line, then exactly this many merges in CLIP's vocabulary
# (49152 BPE entries minus 256 byte symbols minus the 2 special tokens).
CLIP_NUM_MERGES = 49152 - 256 - 2


def _open_clip_bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")  # locate without importing (no torchvision needed)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip (package open_clip_torch) is not installed; it provides the CLIP BPE file")
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise RuntimeError(f"CLIP BPE file not found at {path}")
    return path


@lru_cache(maxsize=1)
def clip_bpe() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(vocabulary in id order, merges as 'a b' lines) of the CLIP BPE tokenizer."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    merges = gzip.open(_open_clip_bpe_path()).read().decode("utf-8").split("\n")[1 : CLIP_NUM_MERGES + 1]
    byte_symbols = list(bytes_to_unicode().values())
    vocab = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m.split()) for m in merges] + [CLIP_BOS, CLIP_EOS]
    return tuple(vocab), tuple(merges)


def write_clip_bpe_files(folder: Path) -> Path:
    """Write vocab.json and merges.txt of the CLIP tokenizer into ``folder``."""
    vocab, merges = clip_bpe()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def build_clip_tokenizer(folder: Path, model_max_length: int = 77):
    """A transformers CLIPTokenizer with the real CLIP vocabulary, saved in ``folder``."""
    from transformers import CLIPTokenizer

    write_clip_bpe_files(folder)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), model_max_length=model_max_length)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def english_words() -> list[str]:
    """Whole alphabetic words of the CLIP vocabulary (~33k common English words and names)."""
    vocab, _ = clip_bpe()
    return [tok[:-4] for tok in vocab if tok.endswith("</w>") and tok[:-4].isalpha() and tok[:-4].isascii()]


def train_byte_level_bpe(vocab_size: int, special_tokens: list[str], corpus=None, *,
                         unk_token=None, add_prefix_space: bool = True):
    """A GPT-2 style byte-level BPE (``tokenizers.Tokenizer``) trained in-process on ``corpus``
    (an iterable of texts; default: english_words() in lines of 64). Deterministic for a fixed corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if corpus is None:
        words = english_words()
        corpus = (" ".join(words[i : i + 64]) for i in range(0, len(words), 64))
    tokenizer = Tokenizer(models.BPE(unk_token=unk_token))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer
