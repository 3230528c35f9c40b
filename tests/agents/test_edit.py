"""Prompt edits for novel images: content-only, style-only, word substitution; generation and CLI."""
import json

import numpy as np
import pytest

from agents.editing.edit import EDITS_HTML, EDITS_JSON, edit_prompt_text, edits_strip_for_report, generate_edit, load_result, main
from agents.editing.prompt_edit import (EditSpecError, PromptEdit, Substitution, apply_edit, parse_substitutions, parts_of_record,
                                substitute_words)
from agents.prompt_parts import PromptParts

PARTS = PromptParts(content=("a black dog on a sofa", "a dog bowl"), style=("oil painting", "warm light"))


def subs(spec):
    return parse_substitutions(spec)


# --------------------------------------------------------------------------- substitution

def test_replaces_every_whole_word_instance_only():
    text = "a cat, category of cats, Cat-like, the cat's toy, concatenate, CAT"
    assert substitute_words(text, subs("-cat +dog")) == "a dog, category of cats, Dog-like, the dog's toy, concatenate, DOG"


def test_case_follows_the_replaced_word():
    assert substitute_words("Dog, dog, DOG", subs("-dog +cat")) == "Cat, cat, CAT"
    # "- Dog + Cat" (Figure B.14's typography) still gives lower case inside a sentence
    assert substitute_words("a dog and a Dog", subs("- Dog + Cat")) == "a cat and a Cat"
    # a proper noun typed as such stays capitalised
    assert substitute_words("a fox", subs("-fox +Garfield")) == "a Garfield"


def test_several_pairs_apply_at_once_so_swaps_work():
    assert substitute_words("a cat chases a dog", subs("-cat +dog -dog +cat")) == "a dog chases a cat"


def test_multi_word_phrases_quoted_or_not_and_longest_first():
    assert substitute_words("a golden  retriever and a golden crown", subs('-"golden retriever" +"tabby cat"')) == \
        "a tabby cat and a golden crown"
    assert substitute_words("a golden retriever", subs("-golden retriever +tabby cat, -golden +silver")) == "a tabby cat"
    assert substitute_words("a golden crown", subs("-golden retriever +tabby cat, -golden +silver")) == "a silver crown"


def test_regex_characters_in_words_are_literal():
    assert substitute_words("a c++ book, a cxx book", (Substitution("c++", "rust"),)) == "a rust book, a cxx book"
    assert substitute_words("1.5 stars and 105 stars", (Substitution("1.5", "2"),)) == "2 stars and 105 stars"


def test_parse_spec_forms():
    assert subs("-dog +cat") == (Substitution("dog", "cat"),)
    assert subs("  - Dog   + Cat ") == (Substitution("Dog", "Cat"),)
    assert subs("-dog +cat; -red +deep blue") == (Substitution("dog", "cat"), Substitution("red", "deep blue"))
    assert subs("-'black-and-white' +colour") == (Substitution("black-and-white", "colour"),)
    assert subs("-dog +cat-like creature") == (Substitution("dog", "cat-like creature"),)


@pytest.mark.parametrize("spec,match", [
    ("", "empty"),
    ("dog +cat", "expected '-'"),
    ("-dog", "expected '\\+'"),
    ("-dog +", "replacement after '\\+' is empty"),
    ('-"dog +cat', "unterminated"),
    ('-"dog"x +cat', "after the closing quote"),
    ("-dog +cat -DOG +fox", "replaced twice"),
    ('-dog +""', "replacement after '\\+' is empty"),
])
def test_bad_specs_say_why(spec, match):
    with pytest.raises(EditSpecError, match=match):
        parse_substitutions(spec)


# --------------------------------------------------------------------------- content / style

def test_spec_parsing_is_linear_in_long_whitespace_runs():
    import time

    def cost(n: int) -> float:
        spec = "-a" + " " * n + "b +c" + " " * n + "d"
        best = float("inf")
        for _ in range(3):
            start = time.thread_time()
            subs = parse_substitutions(spec, max_chars=None)
            best = min(best, time.thread_time() - start)
        assert [(s.old, s.new) for s in subs] == [("a b", "c d")]
        return best

    small, large = cost(5_000), cost(40_000)
    # quadratic would be 64x for 8x the length (old code: ~0.2 s at 40k spaces)
    assert large < 20 * max(small, 1e-4)


def test_content_only_edit_keeps_the_style():
    out = apply_edit(PARTS, PromptEdit(content="a red fox in the snow, pine trees"))
    assert out == PromptParts(("a red fox in the snow", "pine trees"), PARTS.style)
    assert out.render() == "a red fox in the snow, pine trees, oil painting, warm light"


def test_style_only_edit_keeps_the_content():
    out = apply_edit(PARTS, PromptEdit(style="watercolour; soft pastel colours"))
    assert out == PromptParts(PARTS.content, ("watercolour", "soft pastel colours"))


def test_substitution_touches_both_parts_and_replacement_wins_for_its_part():
    out = apply_edit(PARTS, PromptEdit(substitutions=subs("-dog +cat -warm +cold")))
    assert out == PromptParts(("a black cat on a sofa", "a cat bowl"), ("oil painting", "cold light"))
    out = apply_edit(PARTS, PromptEdit(style="charcoal", substitutions=subs("-dog +cat")))
    assert out == PromptParts(("a black cat on a sofa", "a cat bowl"), ("charcoal",))


def test_an_edit_must_change_something():
    with pytest.raises(EditSpecError, match="changes nothing"):
        PromptEdit()
    with pytest.raises(EditSpecError, match="new content is empty"):
        PromptEdit(content=" , ")


def test_plain_prompts_of_other_methods_can_be_edited():
    assert edit_prompt_text("a dog on a beach, oil painting", PromptEdit(substitutions=subs("-dog +cat"))) == \
        "a cat on a beach, oil painting"
    assert edit_prompt_text("a dog on a beach, oil painting", PromptEdit(style="pencil sketch")) == "a dog on a beach, pencil sketch"


def test_parts_of_record_reads_the_batch_result():
    record = {"status": "done", "prompt": {"content": ["a dog"], "style": ["oil painting"], "rendered": "a dog, oil painting"}}
    assert parts_of_record(record) == PromptParts(("a dog",), ("oil painting",))
    with pytest.raises(ValueError, match="no finished prompt"):
        parts_of_record({"status": "error", "source": "x.png"})


# --------------------------------------------------------------------------- generation

class FakeT2I:
    def __init__(self):
        self.calls = []

    async def generate(self, prompt, seeds):
        self.calls.append((prompt, list(seeds)))
        return [np.full((8, 8, 3), (s * 40) % 256, dtype=np.uint8) for s in seeds]


def _result_folder(tmp_path):
    out = tmp_path / "batch"
    folder = out / "images" / "dog-abc"
    folder.mkdir(parents=True)
    record = {"image_id": "abc", "source": "<dog>.png", "status": "done", "reference": "images/dog-abc/reference.png",
              "best_iteration": 1,
              "iterations": [{"iteration": 0, "images": ["images/dog-abc/it0.png"]}, {"iteration": 1, "images": ["images/dog-abc/it1.png"]}],
              "prompt": {"content": ["a dog <b>"], "style": ["oil painting"], "rendered": "a dog <b>, oil painting"}}
    (folder / "result.json").write_text(json.dumps(record))
    return folder, record


async def test_generate_edit_writes_images_index_and_side_by_side_page(tmp_path):
    folder, record = _result_folder(tmp_path)
    t2i = FakeT2I()
    out = await generate_edit(record, folder, PromptEdit(substitutions=subs("-dog +cat")), t2i, [0, 2])
    assert t2i.calls == [("a cat <b>, oil painting", [0, 2])]
    assert [p.name for p in out.images] == ["seed0.png", "seed2.png"] and all(p.is_file() for p in out.images)
    await generate_edit(record, folder, PromptEdit(style="watercolour"), t2i, [0, 2])
    index = json.loads((folder / EDITS_JSON).read_text())
    assert [e["prompt"] for e in index] == ["a cat <b>, oil painting", "a dog <b>, watercolour"]
    page = (folder / EDITS_HTML).read_text()
    assert "a cat &lt;b&gt;" in page and "a cat <b>" not in page and "&lt;dog&gt;.png" in page
    # reference and the reverse prompt's image link back into the batch folder, edits stay local
    assert 'src="../../images/dog-abc/reference.png"' in page and 'src="../../images/dog-abc/it1.png"' in page
    assert 'src="edits/' in page
    # the batch report's view of the same edits: links relative to the batch output folder
    strip = edits_strip_for_report(folder.parent.parent, {**record, "output_dir": "images/dog-abc"})
    assert 'src="images/dog-abc/reference.png"' in strip and 'src="images/dog-abc/edits/' in strip and "a cat &lt;b&gt;" in strip
    assert edits_strip_for_report(folder.parent.parent, {**record, "output_dir": "images/other"}) == ""
    # the same edit again replaces its entry rather than adding one
    await generate_edit(record, folder, PromptEdit(style="watercolour"), t2i, [0, 2])
    assert len(json.loads((folder / EDITS_JSON).read_text())) == 2


@pytest.mark.slow  # ~15-30 s here, nearly all of it importing diffusers
def test_cli_with_the_offline_t2i(tmp_path):
    from actors.offline_kit import t2i

    section = t2i.build(tmp_path / "kit", seed=0)
    config = tmp_path / "cfg.yaml"
    import yaml

    config.write_text(yaml.safe_dump({"t2i": section, "agent": {"seeds": [3, 4]}}))
    folder, _ = _result_folder(tmp_path)
    code = main(["--result", str(folder / "result.json"), "--edit", "-dog +cat", "--content", "a tabby cat", "--config", str(config)])
    assert code == 0
    index = json.loads((folder / EDITS_JSON).read_text())
    assert index[0]["prompt"] == "a tabby cat, oil painting"
    assert [p.rsplit("/", 1)[-1] for p in index[0]["images"]] == ["seed3.png", "seed4.png"]
    assert load_result(folder)["image_id"] == "abc"


def test_cli_shows_edits_in_the_batch_report(tmp_path):
    """After an edit, the image's page in the batch report shows the edited images beside the reverse prompt's (Figure 4.4)."""
    from actors.offline_kit import t2i
    from agents.browser.results import RESULTS_JSONL
    import yaml

    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({"t2i": t2i.build(tmp_path / "kit", seed=0), "agent": {"seeds": [3]}}))
    folder, record = _result_folder(tmp_path)
    out = folder.parent.parent
    (out / RESULTS_JSONL).write_text(json.dumps(dict(record, output_dir="images/dog-abc")) + "\n")
    assert main(["--result", str(folder / "result.json"), "--edit", "-dog +cat", "--config", str(config)]) == 0
    page = (folder / "index.html").read_text()  # the image's detail page in the batch report
    assert "<h2>Prompt edits</h2>" in page
    assert "a cat &lt;b&gt;, oil painting" in page and "a cat <b>" not in page
    assert 'src="edits/' in page and 'src="../../images/dog-abc/reference.png"' in page
    assert (out / "report.html").is_file() and "images/dog-abc/index.html" in (out / "report_rows.js").read_text()


def test_cli_errors_before_loading_models(tmp_path, capsys):
    folder, _ = _result_folder(tmp_path)
    assert main(["--result", str(folder / "result.json"), "--edit", "dog +cat"]) == 2
    assert "expected '-'" in capsys.readouterr().err
    assert main(["--result", str(tmp_path / "missing.json"), "--edit", "-dog +cat"]) == 2
    assert main(["--result", str(folder / "result.json")]) == 2
