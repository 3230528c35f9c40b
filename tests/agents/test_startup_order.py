"""Every check that needs no model runs before any model loads, for the batch job, the page and the
evaluation alike (issue #22): config, output lock, checkpoint database (with a connect timeout), image
plan (Ctrl-C interrupts it); each failure keeps its documented exit status.

Each test makes starting Ray or the roles an error: a check that came after them would fail the test.
"""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

import agents.batch_reverse as batch_reverse
import agents.batch.startup as startup
from agents.browser.results import exclusive_output


@pytest.fixture
def no_models(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a model role (or Ray) was started before the model-free checks failed")

    monkeypatch.setattr(batch_reverse, "start_ray_and_roles", refuse)
    monkeypatch.setattr(startup, "start_ray_and_roles", refuse)
    import core.ray_config

    monkeypatch.setattr(core.ray_config, "init_ray", refuse)


@pytest.fixture
def silent_postgres(monkeypatch):
    """A TCP port that accepts connections and never answers (a firewalled or hung server), as the URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    monkeypatch.setenv("ARPO_POSTGRES_URL", f"postgresql://arpo:s3cret@127.0.0.1:{port}/arpo")
    yield ["--set", "job.checkpoint.kind=postgres", "--set", "job.checkpoint.connect_timeout_s=1"]
    stop.set()
    thread.join()
    for s in held:
        s.close()
    listener.close()


def _images(tmp_path: Path, n: int = 1) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(n):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(folder / f"{i}.png")
    return folder


# --------------------------------------------------------------------------- the batch job

def test_batch_an_empty_folder_is_refused_before_any_model(tmp_path, no_models, capsys):
    (tmp_path / "empty").mkdir()
    assert batch_reverse.main(["--dir", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "no image files found" in capsys.readouterr().err


def test_batch_an_unreachable_checkpoint_database_is_named_within_its_timeout(tmp_path, no_models, silent_postgres,
                                                                                capsys):
    started = time.monotonic()
    code = batch_reverse.main(["--dir", str(_images(tmp_path)), "--out", str(tmp_path / "out"), *silent_postgres])
    err = capsys.readouterr().err
    assert code == 2 and "checkpoint database" in err and "ARPO_POSTGRES_URL" in err, err
    assert "s3cret" not in err
    assert time.monotonic() - started < 20


def test_batch_ctrl_c_while_planning_exits_130_before_any_model(tmp_path, no_models, monkeypatch, capsys):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(batch_reverse, "plan_items", interrupted)
    assert batch_reverse.main(["--dir", str(_images(tmp_path)), "--out", str(tmp_path / "out")]) == 130
    assert "interrupted while starting" in capsys.readouterr().err


# --------------------------------------------------------------------------- the page

def test_serve_an_unreachable_checkpoint_database_exits_2_before_any_model(tmp_path, no_models, silent_postgres, capsys):
    from agents.serve.__main__ import main

    started = time.monotonic()
    assert main(["--port", "0", "--data", str(tmp_path / "d"), *silent_postgres]) == 2
    err = capsys.readouterr().err
    assert "checkpoint database" in err and "s3cret" not in err
    assert time.monotonic() - started < 20


def test_serve_a_data_folder_in_use_exits_2_before_any_model(tmp_path, no_models, capsys):
    from agents.serve.__main__ import main

    with exclusive_output(tmp_path / "d"):
        assert main(["--port", "0", "--data", str(tmp_path / "d")]) == 2
    assert "another server (or batch job) is using this data folder" in capsys.readouterr().err


# --------------------------------------------------------------------------- the evaluation

def _eval_args(tmp_path: Path, images: Path) -> list[str]:
    return ["--dir", str(images), "--set", f"evaluation.out_dir={tmp_path / 'eval'}",
            "--set", "evaluation.methods=[\"file:p.txt\"]"]


def test_evaluate_an_output_folder_in_use_exits_2_before_ray(tmp_path, no_models, capsys):
    from agents.evaluate import main

    images = _images(tmp_path)
    with exclusive_output(tmp_path / "eval"):
        code = main(_eval_args(tmp_path, images))
    err = capsys.readouterr().err
    assert code == 2 and "another batch job is writing to this output folder" in err, err


def test_evaluate_no_images_exits_2_before_ray(tmp_path, no_models, capsys):
    from agents.evaluate import main

    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    code = main(_eval_args(tmp_path, tmp_path / "imgs"))
    err = capsys.readouterr().err
    assert code == 2 and "no usable reference images" in err, err


def test_serve_a_failing_app_start_up_is_a_setup_error_not_uvicorns_exit_3(tmp_path, monkeypatch, capsys):
    """Issue #22: a start-up error surfaced as exit 3 with a uvicorn traceback, after "serving on"."""
    import asyncio

    from agents.batch.errors import SetupError
    from agents.serve.__main__ import bind, serve
    from agents.serve.options import ServeOptions
    from agents.serve.store import RunStore
    from tests.agents.doubles import make_roles
    from tests.agents.serve_doubles import REPLIES, config, world

    def broken(self):
        raise RuntimeError("the run folder cannot be read")

    monkeypatch.setattr(RunStore, "load_all", broken)
    options = ServeOptions(port=0, data_dir=tmp_path / "d")
    sock = bind(options)
    try:
        with pytest.raises(SetupError, match="start-up failed"):
            asyncio.run(serve(config(tmp_path), make_roles(world(), REPLIES), options, sock))
    finally:
        sock.close()
    assert "serving on" not in capsys.readouterr().err
