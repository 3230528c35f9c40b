"""A single-machine training run listens on loopback only (README: everything is loopback).

Ray Train's default torch set-up makes rank 0's c10d TCPStore listen on every interface (``::``);
``training.process_group.LoopbackTorchConfig`` binds it to 127.0.0.1 when the run is on a local,
loopback Ray. The slow test runs a tiny 2-worker training with the CLI while a thread records every
listening TCP socket of this process and its descendants (the local Ray: GCS, raylet, agents,
the Ray Train workers).
"""
from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import psutil
import pytest

from training.process_group import is_loopback, loopback_env, loopback_interface

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "mdss" / "tiny_fashion_mnist.yaml"


@pytest.mark.parametrize("addr, expected", [("127.0.0.1", True), ("127.4.5.6", True), ("::1", True),
                                            ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("::", False),
                                            ("10.0.0.5", False), ("::ffff:10.0.0.5", False), ("vm", False)])
def test_is_loopback(addr, expected):
    assert is_loopback(addr) is expected


def test_loopback_env_names_the_loopback_interface_and_leaves_user_settings(monkeypatch):
    iface = loopback_interface()
    assert iface and any(a.address == "127.0.0.1" for a in psutil.net_if_addrs()[iface])
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "ib0")
    env = loopback_env()
    assert env == {"MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": iface}


def test_the_store_server_listens_on_loopback_only():
    """What rank 0 runs: torch's own TCPStore(is_master=True) would listen on '::'."""
    import torch.distributed as dist

    from training import process_group

    port = process_group._serve_store_on_loopback(timeout_s=10)
    try:
        mine = [c.laddr for c in psutil.Process().net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        assert [a.ip for a in mine] == ["127.0.0.1"]
        client = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=timedelta(seconds=10))
        client.set("k", "v")
        assert process_group._STORE.get("k") == b"v"
    finally:
        process_group._release_store()


def _listening(pids: set[int]) -> list[tuple[str, int, int]]:
    out = []
    for c in psutil.net_connections(kind="inet"):
        if c.status == psutil.CONN_LISTEN and c.pid in pids:
            out.append((c.laddr.ip, c.laddr.port, c.pid))
    return out


@pytest.mark.slow
@pytest.mark.ray
def test_a_two_worker_run_listens_on_loopback_only(tmp_path):
    import ray

    from core.ray_config import RayConfig, init_ray
    from training.train import main

    me = psutil.Process()
    seen: dict[tuple[str, int, int], str] = {}
    done = threading.Event()

    def poll():
        while not done.is_set():
            pids = {me.pid}
            for child in me.children(recursive=True):
                pids.add(child.pid)
            for ip, port, pid in _listening(pids):
                # named at every poll: a worker may open its sockets before Ray sets its title (ray::RayTrainWorker)
                try:
                    seen[(ip, port, pid)] = " ".join(psutil.Process(pid).cmdline())[:60]
                except psutil.Error:
                    seen.setdefault((ip, port, pid), "?")
            time.sleep(0.1)

    started = init_ray(RayConfig(num_cpus=2))
    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        rc = main(["--config", str(CONFIG), "--set", f"run_dir={tmp_path / 'runs'}", "--set", "total_steps=2",
                   "--set", "checkpoint_every=2", "--set", "sample.every=1000"])
    finally:
        done.set()
        watcher.join()
        if started:
            ray.shutdown()
    assert rc == 0
    open_ports = sorted(f"{ip}:{port} ({name})" for (ip, port, _), name in seen.items() if not is_loopback(ip))
    assert not open_ports, f"listening beyond loopback during a local training run: {open_ports}"
    # the poller did see the training workers' own sockets (store, gloo), so the check was not vacuous
    assert any("RayTrainWorker" in name for name in seen.values()), sorted(seen.values())
