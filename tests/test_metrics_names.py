"""The metrics of core/metrics.py, the Grafana dashboard that plots them and docs/metrics.md agree; recording
outside a Ray worker is a no-op that never imports Ray; inside one the series reach Ray's exporter."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.metrics import METRICS, PREFIX, record

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "deploy" / "grafana" / "expectdiff.json"
SUFFIXES = ("_bucket", "_sum", "_count")


def _exprs(node) -> list[str]:
    if isinstance(node, dict):
        return ([node["expr"]] if "expr" in node else []) + [e for v in node.values() for e in _exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in _exprs(v)]
    return []


def test_every_metric_is_plotted_and_every_plotted_series_exists():
    exprs = _exprs(json.loads(DASHBOARD.read_text()))
    used = set(re.findall(rf"ray_{PREFIX}(\w+)", " ".join(exprs)))
    histograms = {n for n, (kind, *_) in METRICS.items() if kind == "histogram"}
    for name in used:
        base = next((name[: -len(s)] for s in SUFFIXES if name.endswith(s) and name[: -len(s)] in histograms), name)
        assert base in METRICS, f"the dashboard plots ray_{PREFIX}{name}, which core/metrics.py does not define"
        assert (base in histograms) == (base != name), f"{name}: histograms are read through _bucket/_sum/_count only"
    plotted = {next((n[: -len(s)] for s in SUFFIXES if n.endswith(s)), n) for n in used}
    assert plotted == set(METRICS), f"not on the dashboard: {sorted(set(METRICS) - plotted)}"
    counters = {n for n, (kind, *_) in METRICS.items() if kind == "counter"}
    for expr in exprs:  # a counter only ever grows: read as a rate, or summed as a total of starts
        for name in set(re.findall(rf"ray_{PREFIX}(\w+)", expr)) & counters:
            assert "rate(" in expr or name == "role_starts_total", expr


def test_docs_list_every_metric_with_its_labels():
    doc = (REPO / "docs" / "metrics.md").read_text()
    for name, (kind, _, tags, _) in METRICS.items():
        line = next((l for l in doc.splitlines() if f"`ray_{PREFIX}{name}`" in l), None)
        assert line is not None, f"docs/metrics.md does not list ray_{PREFIX}{name}"
        assert kind in line and all(f"`{t}`" in line for t in tags), line


def test_recording_outside_ray_is_a_no_op_that_does_not_import_ray():
    code = ("import sys; from core.metrics import record; record('images_total', 1, {'job': 'x', 'status': 'done'}); "
            "print('ray' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "False", run.stderr
    with pytest.raises(KeyError, match="unknown metric"):
        record("no_such_metric", 1, {})
