"""A small T5-style SentencePiece tokenizer trained in-process, for the tiny T5 text encoders.

SD3, FLUX and PixArt-α encode prompts with T5 v1.1, whose tokenizer is a SentencePiece
Unigram model (``spiece.model``) with T5's special ids: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2,
no BOS, and ``</s>`` appended to every sequence. We train one on local English words (the
CLIP vocabulary's whole words, see vocab.py), so ordinary prompts split into several
distinct tokens, and save it as the hub repositories do: ``spiece.model`` *and*
``tokenizer.json``.

Deterministic: the corpus is fixed, training runs on one thread with a fixed seed, and the
model is written from memory (a file-based run would record the temporary input path in
the model), so rebuilding gives byte-identical files.

Note the transformers-5 trap (as for CLIP in vocab.py): ``T5TokenizerFast(vocab_file=...)``
silently ignores the file and gives a 4-token vocabulary; load the folder with
``from_pretrained``, which converts ``spiece.model``.
"""
from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

#: Vocabulary size (T5's is 32,000 + 100 sentinels); with 16k words, common words stay whole.
T5_VOCAB_SIZE = 4000
#: The most common words of the CLIP vocabulary (its order follows BPE merge order, roughly frequency).
CORPUS_WORDS = 16_000
#: Words per training line.
LINE_WORDS = 64
# Capitalised words (sentence starts, names), digits and punctuation, so that a prompt such as
# "A red fox, 4k." has no unknown characters.
CAPITALISED_WORDS = 4096
SYMBOLS_LINE = "0 1 2 3 4 5 6 7 8 9 , . ; : ! ? ' \" ( ) [ ] - / & % + = # @ *"
SEED = 0


def _corpus() -> list[str]:
    from actors.offline_kit.vocab import english_words

    words = english_words()[:CORPUS_WORDS]
    lines = [" ".join(words[i : i + LINE_WORDS]) for i in range(0, len(words), LINE_WORDS)]
    caps = [w.capitalize() for w in words[:CAPITALISED_WORDS]]
    lines += [" ".join(caps[i : i + LINE_WORDS]) for i in range(0, len(caps), LINE_WORDS)]
    return lines + [SYMBOLS_LINE]


@lru_cache(maxsize=4)
def train_spiece_model(vocab_size: int = T5_VOCAB_SIZE) -> bytes:
    """The serialized SentencePiece Unigram model (about half a second; cached per process)."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.set_random_generator_seed(SEED)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_writer=buf,
        model_type="unigram",
        vocab_size=vocab_size,
        pad_id=0, pad_piece="<pad>",
        eos_id=1, eos_piece="</s>",
        unk_id=2, unk_piece="<unk>",
        bos_id=-1,
        character_coverage=1.0,
        normalization_rule_name="nmt_nfkc",  # T5's normalization
        num_threads=1,  # one thread: the same model on every run
        minloglevel=2,
    )
    return buf.getvalue()


def build_t5_tokenizer(folder: Path, model_max_length: int = 512, extra_ids: int = 0):
    """Write ``spiece.model`` + ``tokenizer.json`` (T5 layout) into ``folder``; return the tokenizer loaded from it."""
    from transformers import T5TokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(train_spiece_model())
    # Converts spiece.model to a tokenizers Unigram (with T5's "</s>" post-processor).
    tokenizer = T5TokenizerFast.from_pretrained(str(folder), extra_ids=extra_ids, model_max_length=model_max_length)
    tokenizer.save_pretrained(str(folder))
    return T5TokenizerFast.from_pretrained(str(folder))
