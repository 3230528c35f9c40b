"""``python -m agents.serve``'s start-up refusals: they come before Ray or any model starts."""
from __future__ import annotations

import socket

from agents.serve.__main__ import bind, main
from agents.serve.options import ServeOptions


def test_a_bad_config_is_refused_with_status_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent:\n  max_steps: 0\n")
    assert main(["--config", str(bad), "--data", str(tmp_path / "d")]) == 2
    assert "config error" in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_bad_server_options_are_refused(tmp_path, capsys):
    assert main(["--port", "70000", "--data", str(tmp_path / "d")]) == 2
    assert "port" in capsys.readouterr().err
    assert main(["--max-running", "0", "--data", str(tmp_path / "d")]) == 2


def test_a_busy_port_fails_before_any_model_loads(tmp_path, capsys, monkeypatch):
    import agents.batch.startup as startup

    monkeypatch.setattr(startup, "start_ray_and_roles", lambda *a, **k: (_ for _ in ()).throw(AssertionError("started roles")))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["--port", str(port), "--data", str(tmp_path / "d")]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_the_default_listens_on_loopback_only():
    sock = bind(ServeOptions(port=0))
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()


def test_another_host_is_used_when_asked_with_a_warning(tmp_path, capsys, caplog, monkeypatch):
    import agents.batch.startup as startup
    from agents.batch.errors import SetupError

    seen = {}

    def no_roles(cfg, log_dir=None):
        seen["called"] = True
        raise SetupError("no roles in this test")

    monkeypatch.setattr(startup, "start_ray_and_roles", no_roles)
    with caplog.at_level("WARNING", logger="agents.serve"):
        assert main(["--host", "0.0.0.0", "--port", "0", "--data", str(tmp_path / "d")]) == 2
    assert seen and "listening on 0.0.0.0: anyone who can reach this address" in caplog.text
    assert "no roles in this test" in capsys.readouterr().err
