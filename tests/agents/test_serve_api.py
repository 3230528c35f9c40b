"""The interactive page's HTTP API (agents.serve) over scripted doubles: every endpoint, bad input,
live events, stop/resume, edits, downloads, a restart mid-run, several users, batch folders."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from agents.images import save_png
from agents.serve.options import ServeOptions
from agents.serve.store import RUN_JSON
from tests.agents.doubles import make_roles
from tests.agents.serve_doubles import HEADERS, REPLIES, Gate, config, gated, png_of, read_events, serving, upload, wait_status, world

pytestmark = pytest.mark.timeout(120)


def test_an_upload_runs_to_the_end_and_every_image_of_the_view_is_served(tmp_path):
    with serving(tmp_path) as (server, client, roles, w):
        made = upload(client, png_of(w), "my cat.png", framework="enhanced", max_steps=3, seeds="0,1")
        assert made.status_code == 201, made.text
        run_id = made.json()["run_id"]
        view = wait_status(client, run_id, ("done", "error"))
        assert view["run"]["status"] == "done", view["run"]["error"]
        result = view["result"]
        assert result["source"] == "my cat.png" and result["initial_prompt"] == "a black and white cat"
        assert result["prompt"]["content"][:2] == ["a black and white cat", "whiskers"]
        assert len(result["iterations"]) >= 2
        for it in result["iterations"]:
            assert len(it["image_urls"]) == 2
            for url in it["image_urls"]:
                got = client.get(url)
                assert got.status_code == 200 and got.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert client.get(view["reference_url"]).content == png_of(w)
        nodes = [e["node"] for e in view["run"]["timeline"]]
        assert nodes[:3] == ["init", "generate", "describe"] and nodes.count("generate") == len(result["iterations"])
        assert json.loads((tmp_path / "data" / "runs" / run_id / "result.json").read_text())["status"] == "done"
        assert [r["run_id"] for r in client.get("/api/runs").json()] == [run_id]
        assert client.get("/api/health").json() == {"ok": True, "runs": 1}


def test_a_run_lists_the_prompts_asked_for_and_captions_with_the_trigger_word(tmp_path):
    with serving(tmp_path) as (server, client, roles, w):
        assert client.get("/api/options").json()["prompts_per_image"] == 1
        made = upload(client, png_of(w), framework="enhanced", max_steps=3, seeds="0", prompts_per_image=3,
                      caption_prefix="ohwx")
        assert made.status_code == 201, made.text
        view = wait_status(client, made.json()["run_id"], ("done", "error"))
        result = view["result"]
        assert view["run"]["status"] == "done" and result["prompts_per_image"] == 3
        ranked = result["prompts"]
        assert len(ranked) == min(3, len(result["iterations"])) and ranked[0]["rendered"] == result["prompt"]["rendered"]
        assert [p["clip_i"] for p in ranked] == sorted((it["clip_i"] for it in result["iterations"]), reverse=True)[:len(ranked)]
        assert result["caption"] == "ohwx, " + result["prompt"]["rendered"]


def test_a_run_can_recover_a_negative_prompt_and_a_target_that_cannot_refuses_it(tmp_path):
    from tests.agents.doubles import World, fragment_sum
    from tests.agents.serve_doubles import WEIGHTS

    w = World(fragment_sum(WEIGHTS), negative_gain=fragment_sum({"blurry": .03}, unknown=-.01))
    roles = make_roles(w, {**REPLIES, "negative": ['["blurry", "watermark"]'] * 5})
    with serving(tmp_path, w=w, roles=roles) as (server, client, roles, w):
        options = client.get("/api/options").json()
        assert options["negative"] is False and options["negative_refused"] is None
        made = upload(client, png_of(w), framework="vanilla", max_steps=2, seeds="0", negative="true")
        view = wait_status(client, made.json()["run_id"], ("done", "error"))
        assert view["run"]["status"] == "done", view["run"]["error"]
        assert view["result"]["negative_prompt"] == "blurry" and view["result"]["negative"]["searched"]
        assert view["run"]["request"]["negative"] is True
        assert upload(client, png_of(w), negative="maybe").json()["error"] == "negative must be true or false, got 'maybe'"

    async def refusing_budget():
        return {"limit": 77, "negative_prompt_refused": "FLUX.1 says no"}

    roles = make_roles(w, REPLIES)
    roles.t2i.prompt_budget = refusing_budget
    with serving(tmp_path / "other", w=w, roles=roles) as (server, client, roles, w):
        assert client.get("/api/options").json()["negative_refused"] == "FLUX.1 says no"
        got = upload(client, png_of(w), negative="true")
        assert got.status_code == 400 and "FLUX.1 says no" in got.json()["error"]
        assert upload(client, png_of(w)).status_code == 201  # without it the server works


def test_a_run_can_be_style_only_and_not_with_a_negative_search(tmp_path):
    from tests.agents.test_style_only import StyleClip

    w = world()
    roles = make_roles(w, REPLIES)
    roles.clip = StyleClip(w)
    with serving(tmp_path, w=w, roles=roles) as (server, client, roles, w):
        assert client.get("/api/options").json()["style_only"] is False
        made = upload(client, png_of(w), framework="vanilla", max_steps=2, seeds="0", style_only="true")
        view = wait_status(client, made.json()["run_id"], ("done", "error"))
        assert view["run"]["status"] == "done", view["run"]["error"]
        assert view["run"]["request"]["style_only"] is True and view["result"]["style_only"] is True
        assert all(it["content"] == [] and it["style_i"] is not None for it in view["result"]["iterations"])
        both = upload(client, png_of(w), style_only="true", negative="true")
        assert both.status_code == 400 and "do not go together" in both.json()["error"]


def test_several_images_in_one_upload_are_one_set_with_one_prompt(tmp_path):
    from tests.agents.test_batch_sets import ONLY_FIRST, SHARED, SetWorld, set_roles

    w = SetWorld()
    roles = set_roles(w)
    files = [("file", (f"m{i}.png", save_png(m), "image/png")) for i, m in enumerate(w.members)]
    with serving(tmp_path, w=w, roles=roles, max_set_images=3) as (server, client, roles, w):
        assert client.get("/api/options").json()["max_set_images"] == 3
        made = client.post("/api/runs", files=files, data={"framework": "vanilla", "max_steps": "2", "seeds": "0"},
                           headers=HEADERS)
        assert made.status_code == 201, made.text
        assert made.json()["filename"] == "set of 3: m0.png, m1.png, m2.png"
        view = wait_status(client, made.json()["run_id"], ("done", "error"))
        assert view["run"]["status"] == "done", view["run"]["error"]
        assert [m["filename"] for m in view["run"]["members"]] == ["m0.png", "m1.png", "m2.png"]
        rendered = view["result"]["prompt"]["rendered"]
        assert SHARED in rendered and ONLY_FIRST not in rendered  # the mean over members decided
        assert len(roles.clip.keys) == 3 and roles.captioner.seen == [(32, 32, 3)]  # members scored, grid seen
        too_many = client.post("/api/runs", files=files + files[:1], headers=HEADERS)
        assert too_many.status_code == 400 and "a set holds at most 3" in too_many.json()["error"]


def test_events_carry_each_iteration_as_it_happens(tmp_path):
    w, roles, gate = gated("t2i", "generate")
    with serving(tmp_path, w, roles) as (server, client, _, _):
        run_id = upload(client, png_of(w), max_steps=3).json()["run_id"]
        server.call(_open_after(gate, 0.3))  # generate calls pass one by one, 0.3 s apart
        events = read_events(client, f"/api/runs/{run_id}/events", lambda ev: ev[-1][1]["run"]["status"] == "done")
    counts = [len((data["result"] or {}).get("iterations", [])) for name, data in events if name == "run"]
    assert counts == sorted(counts)  # never backwards
    assert 1 in counts and counts[-1] >= 2  # iterations one at a time, not all at the end
    assert events[0][1]["run"]["status"] in ("queued", "running")


def _open_after(gate: Gate, delay: float):
    async def go():
        import asyncio

        async def trickle():
            for _ in range(int(10 / delay)):
                await asyncio.sleep(delay)
                gate.opened.set()
                await asyncio.sleep(0)
                gate.opened.clear()

        asyncio.get_running_loop().create_task(trickle())
    return go


def test_stop_keeps_the_run_where_it_was_and_resume_continues_it(tmp_path):
    w, roles, gate = gated("t2i", "generate")
    with serving(tmp_path, w, roles) as (server, client, _, _):
        run_id = upload(client, png_of(w), max_steps=2).json()["run_id"]
        _wait(lambda: gate.waiting >= 1)
        stopped = client.post(f"/api/runs/{run_id}/stop", headers=HEADERS)
        assert stopped.status_code == 200 and stopped.json()["run"]["status"] == "stopped"
        assert stopped.json()["result"]["initial_prompt"] == "a black and white cat"  # init was saved
        assert client.post(f"/api/runs/{run_id}/stop", headers=HEADERS).status_code == 409
        server.call(_set(gate))
        resumed = client.post(f"/api/runs/{run_id}/resume", headers=HEADERS)
        assert resumed.status_code == 200
        view = wait_status(client, run_id, ("done", "error"))
        assert view["run"]["status"] == "done" and len(view["result"]["iterations"]) >= 2
        assert roles.captioner.calls["caption"] == 1  # resumed, not restarted
        assert client.post(f"/api/runs/{run_id}/resume", headers=HEADERS).status_code == 409


def _set(gate: Gate):
    async def go():
        gate.opened.set()
    return go


def _wait(cond, timeout: float = 20) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_edits_regenerate_with_the_runs_seeds_and_bad_edits_are_refused(tmp_path):
    w, roles, gate = gated("captioner", "caption")
    with serving(tmp_path, w, roles) as (server, client, _, _):
        run_id = upload(client, png_of(w), seeds="3,5").json()["run_id"]
        early = client.post(f"/api/runs/{run_id}/edits", json={"substitutions": "-cat +dog"}, headers=HEADERS)
        assert early.status_code == 409 and "no generated prompt yet" in early.json()["error"]
        server.call(_set(gate))
        wait_status(client, run_id, ("done",))
        bad = client.post(f"/api/runs/{run_id}/edits", json={"substitutions": "cat dog"}, headers=HEADERS)
        assert bad.status_code == 400 and bad.json()["error"].startswith("edit:")
        empty = client.post(f"/api/runs/{run_id}/edits", json={"content": "  "}, headers=HEADERS)
        assert empty.status_code == 400 and "changes nothing" in empty.json()["error"]
        made = client.post(f"/api/runs/{run_id}/edits", json={"substitutions": "-cat +dog", "style": "watercolour"},
                           headers=HEADERS)
        assert made.status_code == 200, made.text
        edit = made.json()
        assert edit["prompt"].startswith("a black and white dog") and edit["style"] == ["watercolour"]
        assert [u.rsplit("/", 1)[1] for u in edit["image_urls"]] == ["seed3.png", "seed5.png"]
        assert all(client.get(u).status_code == 200 for u in edit["image_urls"])
        assert roles.t2i.prompts[-1] == edit["prompt"]
        view = client.get(f"/api/runs/{run_id}").json()
        assert [e["prompt"] for e in view["edits"]] == [edit["prompt"]]


def test_download_zips_the_result_json_and_every_image(tmp_path):
    with serving(tmp_path) as (server, client, roles, w):
        run_id = upload(client, png_of(w)).json()["run_id"]
        view = wait_status(client, run_id, ("done",))
        got = client.get(f"/api/runs/{run_id}/download")
        assert got.status_code == 200 and got.headers["content-type"] == "application/zip"
        assert f'filename="arpo-{run_id}.zip"' in got.headers["content-disposition"]
        names = set(zipfile.ZipFile(io.BytesIO(got.content)).namelist())
        result = json.loads(zipfile.ZipFile(io.BytesIO(got.content)).read("result.json"))
        assert result["prompt"] == view["result"]["prompt"]
        assert {"result.json", "run.json", "reference.png"} <= names
        images = {p.split("/", 2)[2] for it in view["result"]["iterations"] for p in it["image_paths"]}
        assert images and images <= names


@pytest.mark.parametrize("name, data, status, words", [
    ("notes.png", b"just some text, not an image", 415, "not a readable image"),
    ("photo.svg", None, 415, "extension '.svg'"),
    ("empty.png", b"", 400, "is empty"),
])
def test_bad_uploads_are_refused_naming_the_file_and_cause(tmp_path, name, data, status, words):
    with serving(tmp_path) as (server, client, roles, w):
        got = upload(client, png_of(w) if data is None else data, name)
        assert got.status_code == status and got.json()["error"].startswith(name + ":") and words in got.json()["error"]
        assert client.get("/api/runs").json() == []  # nothing stored


def test_size_and_pixel_limits_refuse_big_uploads(tmp_path):
    big = save_png(np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8))
    cfg = config(tmp_path)
    cfg.job.max_image_pixels = 100 * 100
    with serving(tmp_path, cfg=cfg, max_upload_bytes=len(big) - 1) as (server, client, roles, w):
        got = upload(client, big, "big.png")
        assert got.status_code == 413 and "more than the limit" in got.json()["error"]
    with serving(tmp_path / "b", cfg=cfg) as (server, client, roles, w):
        got = upload(client, big, "bomb.png")
        # Above twice job.max_image_pixels Pillow itself refuses to open the header (configure_pillow_limit)
        assert got.status_code == 413 and "decompression bomb" in got.json()["error"]


@pytest.mark.parametrize("fields, words", [
    ({"max_steps": 0}, "steps must be between 1 and 50"),
    ({"max_steps": 51}, "steps must be between 1 and 50"),
    ({"max_steps": "ten"}, "steps must be a whole number"),
    ({"seeds": "1,x"}, "seeds must be comma-separated"),
    ({"seeds": ",".join(map(str, range(9)))}, "at most 8 seeds"),
    ({"seeds": "1,1"}, "distinct"),
    ({"framework": "fancy"}, "framework must be vanilla or enhanced"),
    ({"prompts_per_image": 0}, "prompts per image must be between 1 and 100"),
    ({"prompts_per_image": "two"}, "prompts per image must be a whole number"),
    ({"caption_prefix": "ohwx, man"}, "trigger word: 'ohwx, man' holds a comma"),
])
def test_bad_run_options_are_refused(tmp_path, fields, words):
    with serving(tmp_path) as (server, client, roles, w):
        got = upload(client, png_of(w), **fields)
        assert got.status_code == 400 and words in got.json()["error"], got.text


def test_changes_need_the_page_header_and_a_loopback_host(tmp_path):
    with serving(tmp_path) as (server, client, roles, w):
        got = client.post("/api/runs", files={"file": ("a.png", png_of(w), "image/png")})
        assert got.status_code == 403 and "X-Expectdiff" in got.json()["error"]
        assert client.get("/api/runs", headers={"Host": "evil.example:8000"}).status_code == 421
        assert client.get("/api/runs", headers={"Host": "localhost:8000"}).status_code == 200
        page = client.get("/")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "http://" not in page.text and "https://" not in page.text  # no remote assets
        assert "random-weight" not in page.text  # the default config names real models: no banner
    assert not ServeOptions(host="0.0.0.0").is_loopback() and ServeOptions(host="::1").is_loopback()


def test_unknown_runs_and_paths_leaving_a_run_are_404(tmp_path):
    with serving(tmp_path) as (server, client, roles, w):
        run_id = upload(client, png_of(w)).json()["run_id"]
        wait_status(client, run_id, ("done",))
        for url in ("/api/runs/0123456789abcdef", "/api/runs/not-a-run", "/api/runs/0123456789abcdef/events",
                    f"/api/runs/{run_id}/files/%2e%2e/%2e%2e/checkpoints.sqlite", f"/api/runs/{run_id}/files/nope.png",
                    "/static/../serve/app.py", "/static/evil.js"):
            assert client.get(url).status_code == 404, url
        assert client.get(f"/api/runs/{run_id}/files/{RUN_JSON}").status_code == 200


def test_a_run_survives_a_server_restart_and_resumes_where_it_was(tmp_path):
    w, roles, gate = gated("t2i", "generate")
    with serving(tmp_path, w, roles) as (server, client, _, _):
        run_id = upload(client, png_of(w), max_steps=2).json()["run_id"]
        _wait(lambda: gate.waiting >= 1)  # init saved, generate in flight when the server stops
    assert json.loads((tmp_path / "data" / "runs" / run_id / RUN_JSON).read_text())["status"] == "running"
    roles2 = make_roles(w, REPLIES)
    with serving(tmp_path, w, roles2) as (server, client, _, _):
        view = wait_status(client, run_id, ("done", "error"))
        assert view["run"]["status"] == "done" and len(view["result"]["iterations"]) >= 2
        assert roles2.captioner.calls["caption"] == 0  # the caption came from the checkpoint
        assert "server restarted" in [e["node"] for e in view["run"]["timeline"]]


def test_a_restart_with_other_settings_marks_unfinished_runs_stale(tmp_path):
    w, roles, gate = gated("t2i", "generate")
    with serving(tmp_path, w, roles) as (server, client, _, _):
        run_id = upload(client, png_of(w)).json()["run_id"]
        _wait(lambda: gate.waiting >= 1)
    other = config(tmp_path)
    other.t2i.num_inference_steps = other.t2i.num_inference_steps + 1
    with serving(tmp_path, w, make_roles(w, REPLIES), cfg=other) as (server, client, _, _):
        view = client.get(f"/api/runs/{run_id}").json()
        assert view["run"]["status"] == "stale" and "other model or agent settings" in view["run"]["error"]
        assert client.post(f"/api/runs/{run_id}/resume", headers=HEADERS).status_code == 409


def test_two_users_at_once_share_the_roles_and_extra_runs_queue(tmp_path):
    w, roles, gate = gated("t2i", "generate")
    with serving(tmp_path, w, roles, max_running=1) as (server, client, _, _):
        first = upload(client, png_of(w)).json()["run_id"]
        second = upload(client, png_of(w), "other.png", framework="vanilla").json()["run_id"]
        _wait(lambda: gate.waiting >= 1)
        assert client.get(f"/api/runs/{second}").json()["run"]["status"] == "queued"
        server.call(_set(gate))
        views = [wait_status(client, r, ("done", "error")) for r in (first, second)]
        assert [v["run"]["status"] for v in views] == ["done", "done"]
        assert views[1]["run"]["request"]["framework"] == "vanilla"
        assert {r["run_id"] for r in client.get("/api/runs").json()} == {first, second}



def test_a_progress_save_left_in_its_thread_never_overwrites_the_final_status(tmp_path):
    """The race behind the flaky test above: a run's publisher saves run.json in a thread after each node;
    when the run ends, _flush cancels the publisher and saves the final status. A cancel cannot stop the
    thread, so an older "running" copy still being written could land after the final "done" one and the
    run read "running" for ever. Here that save is held until the final one has returned (the old code),
    or released at once when the cancelled publisher waits for it (the fix): the final status must win."""
    import asyncio
    import threading
    import types

    from agents.serve.runs import RunManager
    from agents.serve.store import RunMeta, RunRequest, RunStore, new_run_id

    store = RunStore(tmp_path / "data")
    store.load_all()
    real_save = store.save
    progress_saving, release, progress_saved, final_saved = (threading.Event() for _ in range(4))

    def save(meta: RunMeta) -> None:
        progress = meta.status == "running" and bool(meta.timeline)  # the publisher's save after the node
        if progress:
            progress_saving.set()
            assert release.wait(10), "the held save was never released"
        real_save(meta)
        (progress_saved if progress else final_saved if meta.status == "done" else threading.Event()).set()

    store.save = save

    async def optimise(*args, on_node, **kwargs):
        on_node("generate")
        while not progress_saving.is_set():  # end the run while that node's save is in its thread
            await asyncio.sleep(0.005)
        return types.SimpleNamespace(status="done", error=None, source=None, model_dump_json=lambda indent=None: "{}")

    async def scenario() -> str:
        manager = RunManager(config(tmp_path), None, None, store, ServeOptions(data_dir=tmp_path / "data"),
                             optimise_fn=optimise)
        manager._graph = lambda agent_cfg: None
        meta = RunMeta(run_id=new_run_id(), filename="cat.png", image_id="0" * 16, created_at=store.now(),
                       request=RunRequest(framework="enhanced", max_steps=1, seeds=[0]),
                       settings_fingerprint=manager.fingerprint)
        real_save(meta.model_copy(deep=True))
        manager.start(meta)
        while not progress_saving.is_set():
            await asyncio.sleep(0.005)
        publisher = next(t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "RunManager._publisher")
        while not (publisher.done() or publisher.cancelling()):  # _flush has cancelled it
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # the cancellation is delivered (loop callbacks only, no thread involved)
        if publisher.done():  # it left its save behind: let the final save return first, as a slow thread would
            assert await asyncio.to_thread(final_saved.wait, 10), "the final save never came"
        release.set()
        await manager._tasks[meta.run_id]
        assert await asyncio.to_thread(progress_saved.wait, 10)
        assert meta.run_id not in manager._live
        return manager.meta(meta.run_id).status

    assert asyncio.run(scenario()) == "done"  # the store's memory copy, which views read once the run has left
    assert store.read(store.all()[0].run_id).status == "done"  # run.json: a restart must not resume a finished run

def test_batch_folders_are_listed_and_only_the_results_browser_is_served(tmp_path):
    from tests.agents.report_synthetic import write_synthetic_output

    out = tmp_path / "batch_out"
    records = write_synthetic_output(out, 12, durable=False)
    (out / "checkpoints.sqlite").write_bytes(b"secret state")
    with serving(tmp_path, batches=[out, tmp_path / "not_yet"]) as (server, client, roles, w):
        listing = client.get("/api/batches").json()
        assert listing[0]["done"] == sum(r["status"] == "done" for r in records)
        assert listing[0]["failed"] == sum(r["status"] == "error" for r in records)
        assert listing[1]["exists"] is False
        page = client.get(listing[0]["url"])
        assert page.status_code == 200 and "<html" in page.text
        # while the batch runs: a new line in its log shows in the next listing
        from agents.browser.results import RESULTS_JSONL, append_line_durably

        append_line_durably(out / RESULTS_JSONL, {**records[0], "image_id": "new-image", "status": "done"})
        assert client.get("/api/batches").json()[0]["done"] == listing[0]["done"] + 1
        for url in ("/batches/0/checkpoints.sqlite", "/batches/0/.batch.lock", "/batches/0/%2e%2e/secret.txt",
                    "/batches/2/report.html", "/batches/1/report.html"):
            assert client.get(url).status_code == 404, url


def test_roles_panel_sums_each_roles_sharing(tmp_path):
    from agents.serve.app import sharing_summary

    w = world()
    roles = make_roles(w, REPLIES)

    async def t2i_stats(method):
        assert method == "stats"
        return [{"batches": {"batches": 3, "items": 7, "max_batch": 4, "mean_batch": 7 / 3}},
                {"batches": {"batches": 1, "items": 1, "max_batch": 1, "mean_batch": 1.0}}]

    async def broken(method):
        raise TimeoutError("replica busy")

    roles.t2i.broadcast = t2i_stats
    roles.llm.broadcast = broken
    with serving(tmp_path, w, roles) as (server, client, _, _):
        got = client.get("/api/roles").json()
    assert set(got) == {"t2i", "llm"}  # the other doubles have no replicas to ask
    assert got["t2i"]["summary"] == "4 batches of 8 items (mean 2.00)"
    assert got["llm"]["summary"] == "no answer: TimeoutError: replica busy"
    chat_group = [{"llm": {"calls": 5, "max_in_flight": 3}, "vlm": {"calls": 2, "max_in_flight": 1}}]
    assert sharing_summary(chat_group) == "7 calls, at most 3 at once"
    assert sharing_summary([{}]) == "no calls yet"
