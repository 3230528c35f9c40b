"""The HTML report (agents/report.py): well-formed, escaped, relative links, banner, best highlighted."""
from __future__ import annotations

from html.parser import HTMLParser

from agents.config import ArpoConfig
from agents.result import ReverseResult
from actors.offline_kit import OFFLINE_KIT_MARKER
from agents.report import ReportHeader, random_weight_roles, render_report, write_report

from tests.agents.batch_doubles import make_result

VOID = {"meta", "img", "br", "hr", "link", "input"}


class TreeChecker(HTMLParser):
    """Collects tags, attributes and text; fails on any unbalanced or mis-nested element."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(doc: str) -> TreeChecker:
    checker = TreeChecker()
    checker.feed(doc)
    checker.close()
    assert not checker.errors, checker.errors
    assert not checker.stack, f"unclosed: {checker.stack}"
    return checker


EVIL = '<script>alert("x")</script> & "quotes"'


def _records():
    good = make_result("id-1", f"cats/{EVIL}.png", iterations=2).model_dump(mode="json")
    good["initial_prompt"] = "a cat <b>bold</b>"
    good["prompt"] = {"content": ["a cat & a mat"], "style": ["oil <painting>"], "rendered": "a cat & a mat, oil <painting>"}
    good["best_iteration"], good["best_clip_i"], good["best_clip_t"] = 1, 0.81234, 0.3
    good["iterations"][1]["clip_i"], good["iterations"][1]["clip_t"] = 0.81234, 0.3
    good["reference"] = "images/cats-id1/reference.png"
    good["iterations"][0]["images"] = ["images/cats-id1/iter_000_seed0.png"]
    good["iterations"][1]["images"] = ["images/cats-id1/iter 001 seed#0.png", "images/cats-id1/iter_001_seed1.png"]
    good["duplicate_sources"] = ["copy <1>.png"]
    bad = ReverseResult(image_id="id-2", source="broken.png", status="error", error="broken.png: not a readable image <PNG>")
    return [good, bad.model_dump(mode="json")]


def test_report_is_well_formed_and_escaped():
    doc = render_report(_records(), ReportHeader(profile="configs/<x>.yaml", total=3, running=1))
    tree = parse(doc)
    assert "<script>" not in doc and "<painting>" not in doc and "<b>bold" not in doc
    text = "".join(tree.text)
    assert EVIL in text  # shown verbatim as text
    assert "oil <painting>" in text and "a cat & a mat" in text
    assert "broken.png: not a readable image <PNG>" in text
    assert "configs/<x>.yaml" in text
    assert "done: 1" in text and "failed: 1" in text and "running: 1" in text and "total: 3" in text


def test_report_images_are_relative_and_quoted():
    tree = parse(render_report(_records(), ReportHeader(profile="p")))
    srcs = [a["src"] for t, a in tree.tags if t == "img"]
    assert srcs == [
        "images/cats-id1/reference.png",
        "images/cats-id1/iter_000_seed0.png",
        "images/cats-id1/iter%20001%20seed%230.png",
        "images/cats-id1/iter_001_seed1.png",
    ]
    assert all(not s.startswith("/") and "://" not in s for s in srcs)


def test_best_iteration_highlighted_and_content_style_split():
    tree = parse(render_report(_records(), ReportHeader(profile="p")))
    figures = [a.get("class") for t, a in tree.tags if t == "figure"]
    assert figures == [None, None, "best"]  # reference, iteration 0, iteration 1 (best)
    text = "".join(tree.text)
    assert "Content" in text and "Style" in text and "CLIP-I 0.8123" in text and "CLIP-T 0.3000" in text


def test_banner_only_with_random_weights(tmp_path):
    plain = render_report(_records(), ReportHeader(profile="p"))
    assert 'class="banner"' not in plain
    flagged = render_report(_records(), ReportHeader(profile="p", random_weight_roles=["t2i", "clip"]))
    parse(flagged)
    assert 'class="banner"' in flagged and "random-weight models (t2i, clip)" in flagged


def test_random_weight_roles_detects_kit_marker_and_unpretrained_clip(tmp_path):
    assert random_weight_roles(ArpoConfig()) == []
    t2i_dir = tmp_path / "t2i"
    t2i_dir.mkdir()
    (t2i_dir / OFFLINE_KIT_MARKER).write_text("random weights")
    cfg = ArpoConfig.model_validate({"t2i": {"model": str(t2i_dir)}, "clip": {"pretrained": None}})
    assert random_weight_roles(cfg) == ["t2i", "clip"]
    # one marker at the kit's root covers every model folder below it (CLIP: a weights file)
    kit = tmp_path / "kit"
    (kit / "clip").mkdir(parents=True)
    (kit / "llm").mkdir()
    (kit / "clip" / "w.safetensors").write_bytes(b"")
    (kit / OFFLINE_KIT_MARKER).write_text("random weights")
    cfg = ArpoConfig.model_validate({"llm": {"model": str(kit / "llm")}, "clip": {"pretrained": str(kit / "clip" / "w.safetensors")}})
    assert random_weight_roles(cfg) == ["llm", "clip"]


def test_write_report_is_atomic_file(tmp_path):
    path = write_report(tmp_path, _records(), ReportHeader(profile="p"))
    assert path == tmp_path / "report.html"
    parse(path.read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
