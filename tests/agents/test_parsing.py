"""The LLM-output parser: a table of real-looking answers, garbage, and properties."""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.parsing import MAX_FRAGMENT_WORDS, parse_fragments
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
PHRASE = st.lists(WORD, min_size=1, max_size=5).map(" ".join)
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
