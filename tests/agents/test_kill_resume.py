"""A driver killed with SIGKILL mid-run: the rerun resumes from the last completed node.

The child process runs one image until the T2I double's 2nd ``generate`` call (the
start of iteration 1), records its call counts, and hangs there; the test kills it
and reruns the image in this process on the same SQLite file. Every node the child
finished must not run again: the two processes' calls add up to one straight run's.
"""
import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

from agents.api import optimise
from agents.checkpointing import open_checkpointer
from agents.config import AgentConfig, CheckpointConfig
from agents.graph import build_graph, compile_graph
from agents.image_id import content_id
from tests.agents.doubles import World, call_counts, fragment_sum, make_roles, write_reference

REPO = Path(__file__).resolve().parents[2]
CFG = AgentConfig(framework="enhanced", max_steps=3)
SCRIPT = {"content": ["[blue eyes, junk one]", "[bow tie]", "[junk two]"],
          "style": ["[oil painting]", "[soft light]", "[junk three]"]}

CHILD = textwrap.dedent("""
    import asyncio, json, os, sys
    from pathlib import Path
    from agents.api import optimise
    from agents.checkpointing import open_checkpointer
    from agents.config import CheckpointConfig
    from agents.graph import build_graph, compile_graph
    from agents.image_id import content_id
    from tests.agents.doubles import call_counts, make_roles
    from tests.agents.test_kill_resume import CFG, SCRIPT, world

    out, marker = Path(sys.argv[1]), Path(sys.argv[2])
    w = world()
    ref = out / "reference.png"
    roles = make_roles(w, SCRIPT)
    real_generate = roles.t2i.generate

    async def generate(prompt, seeds):
        if roles.t2i.calls["generate"] == 1:  # the 2nd call: report and hang until killed
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(json.dumps({"counts": call_counts(roles), "asked": dict(roles.llm.proposals_asked)}))
            os.replace(tmp, marker)  # the test sees the whole file or none
            await asyncio.sleep(3600)
        return await real_generate(prompt, seeds)

    roles.t2i.generate = generate

    async def main():
        async with open_checkpointer(CheckpointConfig(), out) as saver:
            graph = compile_graph(build_graph(roles, CFG, 77), saver)
            await optimise(content_id(ref), ref, out / "work", roles, CFG, 77, graph=graph)

    asyncio.run(main())
""")


def world():
    return World(fragment_sum({"blue eyes": .05, "bow tie": .04, "oil painting": .03, "soft light": .02}, unknown=-.01))


async def _run(out, ref, roles):
    async with open_checkpointer(CheckpointConfig(), out) as saver:
        graph = compile_graph(build_graph(roles, CFG, 77), saver)
        return await optimise(content_id(ref), ref, out / "work", roles, CFG, 77, graph=graph)


def test_sigkill_then_rerun_continues_from_the_last_node(tmp_path):
    straight_dir = tmp_path / "straight"
    straight_dir.mkdir()
    w = world()
    straight_roles = make_roles(w, SCRIPT)
    straight = asyncio.run(_run(straight_dir, write_reference(w, straight_dir), straight_roles))

    out = tmp_path / "killed"
    out.mkdir()
    ref = write_reference(w, out)
    marker = tmp_path / "child_state.json"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(out), str(marker)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.stdout.read().decode()
            assert time.monotonic() < deadline, "child never reached iteration 1"
            time.sleep(0.1)
    finally:
        child.kill()
        child.wait()
    done = json.loads(marker.read_text())

    # the rerun gets the LLM answers the child had not used yet
    rest = {a: SCRIPT[a][done["asked"].get(a, 0):] for a in SCRIPT}
    roles = make_roles(w, rest)
    result = asyncio.run(_run(out, ref, roles))
    assert result.status == "done"
    assert result.prompt == straight.prompt and [it.rendered for it in result.iterations] == [it.rendered for it in straight.iterations]
    total = {r: dict(Counter(done["counts"][r]) + Counter(call_counts(roles)[r])) for r in done["counts"]}
    assert total == call_counts(straight_roles)
    assert call_counts(roles)["captioner"] == {}  # init finished in the child
