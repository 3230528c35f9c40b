"""Content/style prompt representation (thesis Table 4.1)."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.prompt_parts import Fragment, PromptParts, classify_fragment, normalise
from tests.agents.test_parsing import assert_linear


def test_render_puts_content_first_and_labelled_keeps_parts_apart():
    p = PromptParts(("a cat", "blue eyes"), ("oil painting",))
    assert p.render() == "a cat, blue eyes, oil painting"
    assert p.labelled() == "Content: a cat, blue eyes\nStyle: oil painting"


def test_plus_appends_each_fragment_to_its_part_in_order():
    p = PromptParts(("a cat",), ())
    q = p.plus([Fragment("watercolor", "style"), Fragment("bow tie", "content"), Fragment("soft light", "style")])
    assert q == PromptParts(("a cat", "bow tie"), ("watercolor", "soft light"))
    assert p == PromptParts(("a cat",), ())  # immutable


def test_from_text_reads_the_table_4_1_format():
    text = ("Content: imaginative landscape, exploration, figures placed centrally "
            "Style: surreal quality, digital painting style with high level of detail")
    p = PromptParts.from_text(text)
    assert p.content == ("imaginative landscape", "exploration", "figures placed centrally")
    assert p.style == ("surreal quality", "digital painting style with high level of detail")
    assert PromptParts.from_text(p.labelled()) == p


def test_from_text_without_labels_classifies_each_fragment():
    p = PromptParts.from_text("a lighthouse on a cliff, oil painting, stormy sea; dramatic lighting")
    assert p.content == ("a lighthouse on a cliff", "stormy sea")
    assert p.style == ("oil painting", "dramatic lighting")


def test_caption_is_one_content_fragment():
    assert PromptParts.from_caption("  a black and white cat,  wearing a bow tie ") == \
        PromptParts(("a black and white cat, wearing a bow tie",), ())


@pytest.mark.parametrize("bad", ["", "   "])
def test_empty_prompts_are_refused(bad):
    with pytest.raises(ValueError, match="empty"):
        PromptParts.from_text(bad)
    with pytest.raises(ValueError, match="empty"):
        PromptParts.from_caption(bad)


@pytest.mark.parametrize("text, part", [
    ("watercolor style", "style"), ("oil-painting", "style"), ("warm golden lighting", "style"),
    ("muted colour palette", "style"), ("depth of field", "style"), ("a red scarf", "content"),
    ("light blue silky bow tie", "content"),  # "light" as a shade is not lighting
    ("an article on a table", "content"), ("a lighthouse", "content"), ("two dogs running", "content"),
])
def test_classify_fragment(text, part):
    assert classify_fragment(text) == part


def test_contains_ignores_case_and_spacing():
    p = PromptParts(("Blue  Eyes",), ("oil painting",))
    assert p.contains("blue eyes") and p.contains("Oil painting.") and not p.contains("bow tie")


def test_fragment_validates():
    with pytest.raises(ValueError):
        Fragment("x", "colour")
    with pytest.raises(ValueError):
        Fragment("  ", "style")
    assert Fragment.from_dict(Fragment("a", "style").to_dict()) == Fragment("a", "style")


def test_from_text_labels_after_blank_lines_and_in_any_case():
    p = PromptParts.from_text("Content: a lighthouse,\n\n\n\n  stormy sea\n\n\n\nSTYLE :  oil painting")
    assert p == PromptParts(("a lighthouse", "stormy sea"), ("oil painting",))
    # the case-blind label match also takes a long s; it used to raise KeyError('ſtyle')
    assert PromptParts.from_text("Content: a cat ſtyle: watercolor") == PromptParts(("a cat",), ("watercolor",))


# Long runs of what made the label and separator regexes backtrack: blank lines, spaces, tabs.
RUN = st.tuples(st.sampled_from([" ", "\t", "\n", "\r\n", ",", ";", ":", " :", "content:", "Style:", "a", "oil painting"]),
                st.integers(1, 300)).map(lambda t: t[0] * t[1])
ADVERSARIAL = st.lists(st.one_of(RUN, st.text(max_size=20)), max_size=8).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ADVERSARIAL)
def test_from_text_on_adversarial_text_gives_clean_fragments_or_refuses(text):
    try:
        parts = PromptParts.from_text(text)
    except ValueError as e:
        assert "empty" in str(e) or "no fragments" in str(e)
        return
    for frag in (*parts.content, *parts.style):
        assert frag and frag == " ".join(frag.split()) and not any(c in frag for c in ",;\n")
        assert normalise(frag) == " ".join(frag.casefold().split()).strip(" .,;:!?\"'`")


# (family, make(n), n): n is small where main's quadratic regexes would take minutes at 8n
ADVERSARIAL_FAMILIES = [
    ("blank lines between fragments", lambda n: "a" + "\n" * n + "b", 3000),
    ("spaces between fragments", lambda n: "a" + " " * n + "b", 3000),
]


@pytest.mark.parametrize("make, n", [f[1:] for f in ADVERSARIAL_FAMILIES], ids=[f[0] for f in ADVERSARIAL_FAMILIES])
def test_from_text_time_is_linear_in_the_prompt_length(make, n):
    assert_linear(PromptParts.from_text, make, n)
