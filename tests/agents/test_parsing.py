"""The LLM-output parser: a table of real-looking answers, garbage, properties, and its cost."""
import gc
import json
import logging
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents import chat_steps, parsing
from agents.parsing import MAX_ANSWER_CHARS, MAX_FRAGMENT_WORDS, parse_fragments
from agents.prompt_parts import normalise

FIG_B4 = ("[stylized artistic rendering of a cat, exaggerated large blue eyes, light blue silky bow tie, "
          "smooth fur texture, cool tone background]")

TABLE = [
    # the thesis' own example (Figure B.4): a Python-looking list without quotes
    (FIG_B4, ["stylized artistic rendering of a cat", "exaggerated large blue eyes", "light blue silky bow tie",
              "smooth fur texture", "cool tone background"]),
    # a real Python list after a Llama-2-chat style preamble
    ('  Sure! Here are some image prompts that incorporate the differences:\n\n'
     '["soft warm lighting", "oil painting", "a red scarf around the neck"]\n\nI hope these help!',
     ["soft warm lighting", "oil painting", "a red scarf around the neck"]),
    # single quotes with an escaped apostrophe, and an unescaped one inside double quotes
    ("['cat\\'s blue eyes', \"dog's collar\", 'misty forest']", ["cat's blue eyes", "dog's collar", "misty forest"]),
    # an apostrophe inside a single-quoted item, unescaped (what models really write)
    ("['the cat's eyes', 'bow tie']", ["the cat's eyes", "bow tie"]),
    # a separator inside a quoted item stays in the item
    ('["oil painting, thick impasto", "night sky"]', ["oil painting, thick impasto", "night sky"]),
    # fenced code block with a language tag, text around it
    ("Let's think step by step. The main differences are colour and mood.\n```python\n"
     "prompts = ['muted colours', 'melancholic mood']\n```\nThese should help.", ["muted colours", "melancholic mood"]),
    # a fence that was never closed (answer cut off), list inside intact
    ('```json\n["golden hour", "wide angle"]', ["golden hour", "wide angle"]),
    # numbered list, markdown emphasis, explanations after bold heads
    ("Here are the prompts:\n1. **Soft warm lighting**: Image 1 has warmer tones.\n2. **Oil painting** - visible strokes\n"
     "3) cool blue palette", ["Soft warm lighting", "Oil painting", "cool blue palette"]),
    # bulleted list with mixed bullets, a heading and a repeated phrase (SmolLM2 does this)
    ("### Prompts\n- watercolor style\n* watercolor style\n• Watercolor  style\n- pale pink sky",
     ["watercolor style", "pale pink sky"]),
    # bare comma-separated phrases after a preamble line ending in a colon
    ("Prompts:\nsoft focus, pastel tones, a child flying a kite", ["soft focus", "pastel tones", "a child flying a kite"]),
    # braces and semicolons (the thesis' §4.2.2 example)
    ("{stylized artistic rendering of a cat; exaggerated large blue eyes; serene mood}",
     ["stylized artistic rendering of a cat", "exaggerated large blue eyes", "serene mood"]),
    # items on separate lines without commas
    ('[\n  "foggy harbour"\n  "fishing boats"\n]', ["foggy harbour", "fishing boats"]),
    # nested lists are flattened
    ('[["red roses", "green leaves"], ["baroque frame"]]', ["red roses", "green leaves", "baroque frame"]),
    # a list cut off by the token limit: the cut item is dropped
    ('["snowy peaks", "alpine lake", "pine tr', ["snowy peaks", "alpine lake"]),
    ("[snowy peaks, alpine lake, pine tr", ["snowy peaks", "alpine lake"]),
    # empties, numbers and duplicates (case / spacing) are dropped
    ('["Night sky", "", "  ", "night   sky", "42", "moon"]', ["Night sky", "moon"]),
    # over-long items are prose, not fragments
    ('["' + " ".join(["word"] * (MAX_FRAGMENT_WORDS + 1)) + '", "short one"]', ["short one"]),
    # a JSON object: the first list inside it
    ('{"content": ["a lighthouse", "rocky shore"]}', ["a lighthouse", "rocky shore"]),
]

GARBAGE = [
    "", "   \n\t", "[]", "[ , , ]", "```\n```", "```python\n```", "!!!, ???, ...", "12345", "[1, 2, 3]",
    "{", "]", "[\"", "watercolor",  # one bare phrase is not a list
    "The image shows a cat. It has blue eyes, and it wears a bow tie.",  # prose
    "I cannot compare images. Please provide them.",
    "- \n- \n-", "%%%%%%%%",
]


@pytest.mark.parametrize("text, expected", TABLE)
def test_real_looking_answers(text, expected):
    assert parse_fragments(text) == expected


@pytest.mark.parametrize("text", GARBAGE)
def test_garbage_gives_none(text):
    assert parse_fragments(text) is None


def test_non_string_gives_none():
    assert parse_fragments(None) is None


def test_deep_nesting_does_not_recurse_without_bound():
    assert parse_fragments("[" * 5000 + "a, b" + "]" * 5000) is not None


def _well_formed(result):
    assert result is None or (isinstance(result, list) and result)
    for frag in result or []:
        assert frag == frag.strip() and frag
        assert any(c.isalpha() for c in frag)
        assert len(frag.split()) <= MAX_FRAGMENT_WORDS
    keys = [normalise(f) for f in result or []]
    assert len(keys) == len(set(keys))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_any_text_never_raises_and_is_clean(text):
    _well_formed(parse_fragments(text))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="[]{}()\"'`,;:.-*•\n 1234567890!?#", max_size=200))
def test_structure_without_letters_is_garbage(text):
    assert parse_fragments(text) is None


WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
# the parser drops these as list boilerplate, so they cannot round-trip
PHRASE = st.lists(WORD, min_size=1, max_size=5).map(" ".join).filter(
    lambda p: p not in {"etc", "and so on", "python", "json"})
PHRASES = st.lists(PHRASE, min_size=2, max_size=8, unique_by=normalise)


@settings(max_examples=150, deadline=None)
@given(PHRASES, st.sampled_from(["json", "python_single", "bare", "fenced", "numbered", "bulleted", "comma"]))
def test_round_trip_in_every_shape(phrases, shape):
    text = {
        "json": json.dumps(phrases),
        "python_single": "[" + ", ".join(f"'{p}'" for p in phrases) + "]",
        "bare": "Here you go: [" + ", ".join(phrases) + "]",
        "fenced": "```python\n" + json.dumps(phrases) + "\n```",
        "numbered": "\n".join(f"{i}. {p}" for i, p in enumerate(phrases, 1)),
        "bulleted": "Prompts:\n" + "\n".join(f"- {p}" for p in phrases),
        "comma": ", ".join(phrases),
    }[shape]
    assert parse_fragments(text) == phrases


# --------------------------------------------------------------------------- adversarial text and cost

# Long runs of what makes a parser backtrack or rescan: unclosed brackets and quotes, escapes,
# spaces, fences without a close, separators, bullets, markdown.
RUN_OF = ["[", "{", "(", "]", "}", '"', "'", "“", "‘", "«", "`", "```", "\\", "\\'", " ", "\t", "\n", "\n\n",
          ",", ";", ":", "- ", "1. ", "**", "a", "cat's ", "[[[[[", '["', "['"]
RUN = st.tuples(st.sampled_from(RUN_OF), st.integers(1, 400)).map(lambda t: t[0] * t[1])
# a bullet line with a long run of spaces (or tabs) inside it or at its end
SPACED_BULLET = st.tuples(st.sampled_from(["- ", "* ", "1. ", "(2) ", "• "]), st.sampled_from(" \t"),
                          st.integers(0, 2000), st.text(max_size=5)).map(lambda t: f"\n{t[0]}a{t[1] * t[2]}{t[3]}")
ADVERSARIAL = st.lists(st.one_of(RUN, SPACED_BULLET, st.text(max_size=20)), max_size=8).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ADVERSARIAL)
def test_adversarial_text_never_raises_and_is_clean(text):
    _well_formed(parse_fragments(text))


def test_long_answers_are_cut_to_the_cap_with_a_warning(caplog):
    text = '["soft light", "oil painting", "misty' + " " * MAX_ANSWER_CHARS + ' forest"]'
    with caplog.at_level(logging.WARNING, logger="agents.parsing"):
        # cut inside the third item: read like an answer cut by the token limit
        assert parse_fragments(text) == ["soft light", "oil painting"]
    assert f"cut to its first {MAX_ANSWER_CHARS}" in caplog.text
    assert parse_fragments(text, max_chars=len(text)) == ["soft light", "oil painting", "misty forest"]


def test_bracket_search_gives_up_when_its_work_budget_is_spent(monkeypatch):
    # the list is found only after ~1000 failed starts at the brackets before it
    text = "[" * 1000 + '"a b", "c d"]'
    assert parsing._bracketed(text) == ["a b", "c d"]
    monkeypatch.setattr(parsing, "_WORK_PER_CHAR", 0)  # leaves the fixed 1024 units
    assert parsing._bracketed(text) == []
    _well_formed(parse_fragments(text))


def _seconds(fn, arg) -> float:
    """CPU seconds of this thread for ``fn(arg)``.

    Not wall time (perf_counter): on a shared 2-core machine other processes stretch a run's
    wall time at random, and under a load of ~8 the wall-clock ratio failed 1 run in 5.
    """
    gc.disable()  # a collection landing in one run is noise, not the parser's cost
    try:
        start = time.thread_time()
        fn(arg)
        return time.thread_time() - start
    finally:
        gc.enable()


def assert_linear(fn, make, n: int, bound: float = 20.0) -> None:
    """``fn`` on ``make(8 * n)`` takes less than ``bound`` times as long as on ``make(n)``.

    Linear is ~8x, quadratic ~64x. Best of 3 runs each; the big runs stop at the first
    under the bound.
    """
    small_text, big_text = make(n), make(8 * n)
    small = min(_seconds(fn, small_text) for _ in range(3))
    big = []
    for _ in range(3):
        big.append(_seconds(fn, big_text))
        if big[-1] < bound * small:
            return
    raise AssertionError(f"{len(small_text)} chars: {small * 1e3:.2f} ms; {len(big_text)} chars: "
                         f"{min(big) * 1e3:.2f} ms, {min(big) / small:.0f}x (bound {bound:.0f}x)")


def _parse_uncapped(text):
    return parse_fragments(text, max_chars=len(text))


# (family, make(n), n): n is small where main's quadratic parser would take minutes at 8n, and
# large where its quadratic term is string copying, cheap per character (below 64k it hid).
ADVERSARIAL_FAMILIES = [
    ("unclosed brackets", lambda n: "[" * n, 2500),
    ("unclosed braces, then separators", lambda n: "{" * (n // 2) + "," * (n // 2), 2500),
    ("spaces inside a bullet line", lambda n: "- a" + " " * n + "b", 8000),
    ("escaped quotes in an unclosed quoted item", lambda n: '["' + '\\\\" a' * (n // 5), 64000),
    ("an item of nested bullets", lambda n: "[" + "- " * (n // 2) + "x]", 64000),
]


@pytest.mark.parametrize("make, n", [f[1:] for f in ADVERSARIAL_FAMILIES], ids=[f[0] for f in ADVERSARIAL_FAMILIES])
def test_parsing_time_is_linear_in_the_answer_length(make, n):
    assert_linear(_parse_uncapped, make, n)


class _OneAnswerLLM:
    def __init__(self, answer: str):
        self.answer = answer

    async def chat(self, messages, sampling=None) -> str:
        return self.answer


@pytest.mark.parametrize("length, on_a_thread", [(100, False), (chat_steps.INLINE_PARSE_CHARS + 1, True)])
async def test_long_answers_are_parsed_off_the_event_loop(monkeypatch, length, on_a_thread):
    parsed_on = []

    def spy(text):
        parsed_on.append(threading.get_ident())
        return parse_fragments(text)

    monkeypatch.setattr(chat_steps, "parse_fragments", spy)
    answer = '["soft light", "oil painting"]'.ljust(length)
    assert await chat_steps.ask_for_list(_OneAnswerLLM(answer), [], max_reasks=0) == ["soft light", "oil painting"]
    assert (parsed_on[0] != threading.get_ident()) is on_a_thread
