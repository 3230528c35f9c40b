"""The results browser (agents/browser/report.py): the index, the rows and summary data files, the detail pages.

Checked here without a browser: pages well-formed, every text escaped (``<script>`` in a prompt
and in a file name), data embedded in JavaScript safe against ``</script>``, links relative and
quoted, the banner, the best iteration highlighted, each candidate's fate, and the writer's
constant work per image. tests/agents/test_report_browser.py runs the pages in Chromium.
"""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from actors.offline_kit import OFFLINE_KIT_MARKER
from agents.config import ArpoConfig
from agents.browser.html_render import environment
from agents.browser.html_text import script_json
from agents.browser.report import (DETAIL_HTML, REPORT_HTML, ROWS_JS, SUMMARY_JS, ReportHeader, ReportWriter, random_weight_roles,
                           render_detail, render_index, report_row, write_report)
from agents.result import ReverseResult
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
        self.scripts: list[str] = []

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
        if self.stack and self.stack[-1] in ("script", "style"):
            if self.stack[-1] == "script":
                self.scripts.append(data)
            return
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
    good["output_dir"] = "images/cats-id1"
    good["reference"] = "images/cats-id1/reference.png"
    good["iterations"][0]["images"] = ["images/cats-id1/iter_000_seed0.png"]
    good["iterations"][1]["images"] = ["images/cats-id1/iter 001 seed#0.png", "images/cats-id1/iter_001_seed1.png"]
    good["iterations"][0]["description"] = {"content": "a cat <on> a mat", "style": "photo"}
    good["iterations"][0]["differences"] = {"content": "- the mat is <red>", "style": "- oil, not photo"}
    good["reference_description"] = {"content": "a cat on a red mat </script>", "style": "oil painting"}
    good["iterations"][0]["selection"] = [
        {"text": "detail 0", "part": "content", "outcome": "kept", "clip_t": 0.21, "needed": 0.2, "round": 0},
        {"text": "<junk>", "part": "content", "outcome": "no_gain", "clip_t": 0.19, "needed": 0.21, "round": 1},
        {"text": "a very long one", "part": "style", "outcome": "too_long", "clip_t": None, "needed": None, "round": None},
        {"text": "detail 0", "part": "style", "outcome": "duplicate", "clip_t": None, "needed": None, "round": None},
    ]
    good["duplicate_sources"] = ["copy <1>.png"]
    good["elapsed_s"] = 12.5
    bad = ReverseResult(image_id="id-2", source="broken<img src=x onerror=alert(1)>.png", status="error",
                        error="broken.png: not a readable image <PNG>").model_dump(mode="json")
    bad["output_dir"] = "images/broken-id2"
    return [good, bad]


def _rows(text: str) -> list[dict]:
    lines = [ln for ln in text.splitlines() if ln.startswith("ARPO.rows.push(")]
    return [json.loads(ln[len("ARPO.rows.push("):-len(");")]) for ln in lines]


def read_browser(out: Path) -> tuple[dict, dict, dict]:
    """What a batch output folder's browser holds: rows by image id (latest), the summary, and
    each row's parsed detail page (every image it shows checked to exist, relative to the page)."""
    parse((out / REPORT_HTML).read_text(encoding="utf-8"))
    rows = {r["id"]: r for r in _rows((out / ROWS_JS).read_text(encoding="utf-8"))}
    summary = json.loads(re.fullmatch(r"ARPO\.summary = (.*);\n", (out / SUMMARY_JS).read_text(encoding="utf-8")).group(1))
    pages = {}
    for image_id, row in rows.items():
        page = out / row["page"]
        pages[image_id] = tree = parse(page.read_text(encoding="utf-8"))
        for tag, attrs in tree.tags:
            if tag == "img":
                assert (page.parent / attrs["src"]).resolve().is_file(), attrs["src"]
    return rows, summary, pages


# --------------------------------------------------------------------------- escaping

@pytest.mark.parametrize("value", [EVIL, "</SCRIPT><!-- x", "a\u2028b\u2029c", "&amp; <>", {"k": ["</script>"]}])
def test_script_json_cannot_end_the_script_and_reads_back_the_same(value):
    text = script_json(value)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text and "\u2029" not in text
    assert json.loads(text) == value


def test_detail_page_is_well_formed_and_escaped():
    good, bad = _records()
    doc = render_detail(good, ReportHeader(profile="configs/<x>.yaml"), "../../")
    tree = parse(doc)
    assert "<script>" not in doc and "<painting>" not in doc and "<b>bold" not in doc and "<red>" not in doc
    assert not tree.scripts  # a detail page has no script at all
    text = "".join(tree.text)
    assert f"cats/{EVIL}.png" in text  # shown verbatim as text
    assert "oil <painting>" in text and "a cat & a mat" in text and "configs/<x>.yaml" in text
    assert "copy <1>.png" in text and "a cat on a red mat </script>" in text
    error_doc = render_detail(bad, ReportHeader(profile="p"), "../../")
    error_text = "".join(parse(error_doc).text)
    assert "<img src=x" not in error_doc and "broken<img src=x onerror=alert(1)>.png" in error_text
    assert "broken.png: not a readable image <PNG>" in error_text and "did not finish" in error_text


def test_index_and_rows_escape_names_and_errors(tmp_path):
    records = _records()
    write_report(tmp_path, records, ReportHeader(profile="configs/<x>.yaml", total=3, running=1))
    index = (tmp_path / REPORT_HTML).read_text()
    tree = parse(index)
    assert "configs/<x>.yaml" in "".join(tree.text) and "<x>" not in index
    rows_js = (tmp_path / ROWS_JS).read_text()
    assert "<" not in rows_js and ">" not in rows_js  # nothing in the data can close a script or open a tag
    rows = _rows(rows_js)
    assert [r["name"] for r in rows] == [f"cats/{EVIL}.png", "broken<img src=x onerror=alert(1)>.png"]
    assert rows[1]["err"] == "broken.png: not a readable image <PNG>"
    summary = json.loads(re.fullmatch(r"ARPO\.summary = (.*);\n", (tmp_path / SUMMARY_JS).read_text()).group(1))
    assert (summary["total"], summary["running"], summary["interrupted"]) == (3, 1, False)
    # the page loads the data files by relative script tags, and has the script of the index verbatim
    assert [a["src"] for t, a in tree.tags if t == "script" and "src" in a] == [SUMMARY_JS, ROWS_JS]
    js = environment().loader.get_source(environment(), "report_index.js")[0]
    assert js.strip() in index


def test_the_index_shows_the_sort_and_filter_controls():
    tree = parse(render_index(ReportHeader(profile="p")))
    keys = [a["data-key"] for t, a in tree.tags if t == "button" and a.get("class") == "sort"]
    assert keys == ["name", "status", "first", "best", "gain", "iterations", "time"]
    ids = {a.get("id") for t, a in tree.tags}
    assert {"f-status", "f-name", "f-gain-min", "f-gain-max", "f-it-min", "f-it-max", "p-next", "gain-histogram", "stops"} <= ids


# --------------------------------------------------------------------------- links and content

def test_detail_page_images_are_relative_and_quoted():
    tree = parse(render_detail(_records()[0], ReportHeader(profile="p"), "../../"))
    srcs = [a["src"] for t, a in tree.tags if t == "img"]
    assert srcs == [
        "../../images/cats-id1/reference.png",
        "../../images/cats-id1/iter_000_seed0.png",
        "../../images/cats-id1/iter%20001%20seed%230.png",
        "../../images/cats-id1/iter_001_seed1.png",
    ]
    links = [a["href"] for t, a in tree.tags if t == "a"]
    assert set(links) == {"../../report.html"}


def test_rows_link_detail_page_reference_and_best_image():
    good, bad = _records()
    row = report_row(good)
    assert row["page"] == f"images/cats-id1/{DETAIL_HTML}" and row["ref"] == "images/cats-id1/reference.png"
    assert row["thumb"] == "images/cats-id1/iter%20001%20seed%230.png"  # the best iteration's first image
    assert row["c0"] == pytest.approx(0.5) and row["cb"] == pytest.approx(0.81234) and row["g"] == pytest.approx(0.31234)
    assert (row["n"], row["bi"], row["t"], row["st"], row["stop"]) == (2, 1, 12.5, "done", "max_steps")
    assert report_row(bad)["thumb"] is None and report_row(bad)["g"] is None
    crafted = dict(good, output_dir="../../etc", reference="javascript:alert(1)")
    assert report_row(crafted)["page"] is None and report_row(crafted)["ref"] == "javascript%3Aalert%281%29"


def test_best_iteration_highlighted_and_content_style_split():
    tree = parse(render_detail(_records()[0], ReportHeader(profile="p"), "../../"))
    sections = [a.get("class") for t, a in tree.tags if t == "section"]
    assert sections == ["iteration", "iteration best"]
    parts = [(a["data-part"]) for t, a in tree.tags if t == "div" and "data-part" in a]
    assert parts == ["content", "style"] * 3  # the final prompt and each iteration's
    text = "".join(tree.text)
    assert "CLIP-I 0.8123" in text and "CLIP-T 0.3000" in text and "gain over iteration 0: 0.3123" in text


def test_detail_page_says_what_happened_to_every_candidate_and_why_it_stopped():
    text = "".join(parse(render_detail(_records()[0], ReportHeader(profile="p"), "../../")).text)
    assert "kept: CLIP-T 0.2100 ≥ 0.2000, the best so far" in text
    assert "dropped: CLIP-T 0.1900 < 0.2100, the best so far (did not raise the score)" in text
    assert "dropped: too long for the token limit" in text and "dropped: same text as an earlier candidate" in text
    assert "max_steps" in text and "it reached the most iterations allowed" in text
    # the VLM's descriptions and the differences
    assert "a cat <on> a mat" in text and "- the mat is <red>" in text and "oil painting" in text


def test_a_record_without_candidate_scores_still_says_what_it_can():
    record = make_result("old", "old.png", iterations=3).model_dump(mode="json")
    record["iterations"][0]["too_long"] = ["x"]
    record["iterations"][0]["candidates"].append({"text": "x", "part": "style"})
    text = "".join(parse(render_detail(record, ReportHeader(profile="p"), "../../")).text)
    assert "kept (its score was not recorded)" in text and "dropped: too long for the token limit" in text
    assert "not kept (its score was not recorded in this record)" in text  # the last iteration's candidate


def test_banner_only_with_random_weights():
    plain = render_index(ReportHeader(profile="p")) + render_detail(_records()[0], ReportHeader(profile="p"), "../../")
    assert 'role="alert"' not in plain and "random-weight" not in plain
    flagged = ReportHeader(profile="p", random_weight_roles=["t2i", "clip"])
    for doc in (render_index(flagged), render_detail(_records()[0], flagged, "../../")):
        parse(doc)
        assert 'class="banner" role="alert"' in doc and "random-weight models (t2i, clip)" in doc


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


# --------------------------------------------------------------------------- writing

def _folders(out: Path, records):
    for r in records:
        (out / r["output_dir"]).mkdir(parents=True, exist_ok=True)


def test_write_report_writes_index_data_and_detail_pages_atomically(tmp_path):
    records = _records()
    _folders(tmp_path, records)
    path = write_report(tmp_path, records, ReportHeader(profile="p"))
    assert path == tmp_path / REPORT_HTML
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["images/broken-id2/index.html", "images/cats-id1/index.html", REPORT_HTML, ROWS_JS, SUMMARY_JS]
    for page in ("images/broken-id2/index.html", "images/cats-id1/index.html", REPORT_HTML):
        parse((tmp_path / page).read_text())


def test_a_crafted_output_dir_gets_no_page_outside_the_output_folder(tmp_path):
    out = tmp_path / "out"
    (tmp_path / "victim").mkdir(parents=True)
    out.mkdir()
    record = dict(_records()[0], output_dir="../victim")
    write_report(out, [record], ReportHeader(profile="p"), rewrite_pages=True)
    assert not (tmp_path / "victim" / DETAIL_HTML).exists()
    assert _rows((out / ROWS_JS).read_text())[0]["page"] is None


def test_the_writer_adds_one_page_and_one_row_per_image_and_rebuilds_rows_on_start(tmp_path):
    records = _records()
    _folders(tmp_path, records)
    writer = ReportWriter(tmp_path, ReportHeader(profile="p", total=2))
    writer.start([records[0]])
    index_before = (tmp_path / REPORT_HTML).stat().st_mtime_ns
    page0 = tmp_path / "images/cats-id1" / DETAIL_HTML
    page0_before = page0.stat().st_mtime_ns
    rows_before = (tmp_path / ROWS_JS).read_bytes()
    writer.add(records[1])
    rows_after = (tmp_path / ROWS_JS).read_bytes()
    # appended: the old bytes untouched, exactly one new line; index and other pages not rewritten
    assert rows_after.startswith(rows_before) and rows_after[len(rows_before):].count(b"\n") == 1
    assert (tmp_path / REPORT_HTML).stat().st_mtime_ns == index_before and page0.stat().st_mtime_ns == page0_before
    assert (tmp_path / "images/broken-id2" / DETAIL_HTML).is_file()
    # a later run rebuilds the rows from the log it is given: a row whose log line never came is gone,
    # a torn last line (a crash mid-append) too, and a page a crash left missing is written
    with (tmp_path / ROWS_JS).open("ab") as fh:
        fh.write(b'ARPO.rows.push({"id":"torn"')
    page0.unlink()
    ReportWriter(tmp_path, ReportHeader(profile="p")).start([records[0]])
    assert [r["id"] for r in _rows((tmp_path / ROWS_JS).read_text())] == ["id-1"]
    assert (tmp_path / ROWS_JS).read_text().endswith(");\n") and page0.is_file()
