"""Content/style prompt representation (thesis Table 4.1)."""
import pytest

from agents.prompt_parts import Fragment, PromptParts, classify_fragment


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
