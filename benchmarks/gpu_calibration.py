"""Calibration of the scale simulation's latency model on one GPU (issue #24 item 7), without Ray or vLLM.

benchmarks/scale/latency.py prices each role from published figures and datasheets with assumed
efficiencies (docs/scale.md, "The latency model and its sources"). Three parts measure what those
assumptions stand on, on real-size architectures with random weights (nothing is downloaded, so
these are speed figures only):

* ``t2i``: the SD1.5-size pipeline (benchmarks/serving_gpu.py's builder: UNet, VAE, CLIP-L text
  encoder) at 512², 25 DDIM steps with CFG, float16, batch 1, 4 and 8: the ``a + c·b`` shape the
  model fits to the published A10 table (a = 0.31 s, c = 1.178 s per image at 25 steps, a/c = 0.26).
* ``share``: the GPU-share rule — a replica with ``num_gpus`` 0.5 runs at half speed (a static
  partition). The same T2I work in one process alone, then in two processes at once on the GPU
  (separate CUDA contexts, as two Ray actors with half a GPU each): per-process speed shared ÷ alone
  (the rule says 0.5) and the two together ÷ one alone (the rule says 1.0).
* ``llm``: a Mistral-7B-shaped decoder (transformers ``MistralForCausalLM``: 32 layers, hidden 4096,
  GQA 32/8 heads, MLP 14336, vocab 32000; the text model of LLaVA-v1.6-Mistral-7B) in float16.
  Prefill of a 3,000-token prompt through the real model (seconds per token; compute-bound), and
  the decode step at 1, 16 and 64 running sequences with 3,000 tokens of context each: every
  layer's weight matmuls and grouped-query attention over a static KV cache, replayed as one CUDA
  graph — what a serving engine's captured decode step does, without its sampler, paging and
  scheduler, so a floor for vLLM's step. Fitted as ``t0 + t1·n`` and set beside latency.py's recipe
  evaluated with this GPU's datasheet figures; the implied bandwidth and FLOP efficiencies are what
  replace the assumed ones (0.7 and 0.5). One eager transformers decode step at n = 1 is printed
  too (the project's transformers chat backend), to show what launch overhead adds.

Usage (repository root):
    python benchmarks/gpu_calibration.py --device cuda --json OUT.json            # every part
    python benchmarks/gpu_calibration.py --device cuda --parts llm,share
    python benchmarks/gpu_calibration.py --device cpu --tiny                       # tiny shapes: a dry run

Third-party imports: torch, diffusers, transformers.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.scale.latency import fit_line, llava_next_mistral7b_l40s, sd15_a10  # noqa: E402
from benchmarks.serving_gpu import TINY as TINY_T2I_PLAN  # noqa: E402
from benchmarks.serving_gpu import Plan, build_t2i, device_name, prompts, timed  # noqa: E402

# The text model of LLaVA-v1.6-Mistral-7B (Mistral-7B-Instruct-v0.2's published config.json values).
MISTRAL_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
                  rms_norm_eps=1e-5, rope_theta=1e6, sliding_window=None)
TINY_MISTRAL = dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                    rms_norm_eps=1e-5, rope_theta=1e6, sliding_window=None)
MISTRAL_7B_PARAMS = 7.24e9  # as latency.py counts them

# Datasheet peaks (dense FP16 tensor TFLOPS, memory GB/s) of the GPUs a device session may get.
DATASHEETS = {
    "H200": (989.5, 4800.0),  # NVIDIA H200 SXM datasheet: 1,979 TFLOPS FP16 with sparsity, 4.8 TB/s HBM3e
    "H100 PCIe": (756.0, 2000.0),  # NVIDIA H100 PCIe: 1,513 with sparsity, 2 TB/s
    "H100": (989.5, 3350.0),  # NVIDIA H100 SXM: 1,979 with sparsity, 3.35 TB/s
    "A100": (312.0, 2039.0),  # NVIDIA A100 80GB SXM: 312 TFLOPS FP16, 2,039 GB/s
    "L40S": (362.05, 864.0),  # as latency.py
}


@dataclass
class Setup:
    image_size: int = 512
    steps: int = 25
    t2i_batches: tuple[int, ...] = (1, 4, 8)
    repeats: int = 2
    share_batch: int = 4
    share_seconds: float = 30.0
    llm: dict = field(default_factory=lambda: dict(MISTRAL_7B))
    prompt_tokens: int = 3000
    context_tokens: int = 3000
    decode_seqs: tuple[int, ...] = (1, 16, 64)
    tiny: bool = False


FULL = Setup()
TINY = Setup(image_size=TINY_T2I_PLAN.image_size, steps=TINY_T2I_PLAN.steps, t2i_batches=(1, 2), repeats=1, share_batch=1,
             share_seconds=1.0, llm=dict(TINY_MISTRAL), prompt_tokens=64, context_tokens=64, decode_seqs=(1, 4), tiny=True)


def datasheet(name: str) -> Optional[tuple[str, float, float]]:
    """(key, TFLOPS, GB/s) of the first DATASHEETS key in the device name, else None."""
    for key, (tflops, gbps) in DATASHEETS.items():
        if key in name:
            return key, tflops, gbps
    return None


def plan_for(setup: Setup) -> Plan:
    return Plan(image_size=setup.image_size, steps=setup.steps, t2i_batches=setup.t2i_batches, clip_model="",
                clip_batches=(), repeats=setup.repeats)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------- t2i
def part_t2i(setup: Setup, device: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t2i = build_t2i(plan_for(setup), device, setup.tiny, Path(tmp))
        rows = []
        for b in setup.t2i_batches:
            items = [(p, i) for i, p in enumerate(prompts(b))]
            rows.append({"batch": b, "s_per_batch": timed(lambda: t2i.generate_batch(items), device, setup.repeats)})
    a, c = fit_line([(r["batch"], r["s_per_batch"]) for r in rows])
    model = sd15_a10(setup.steps)
    return {"rows": rows, "a_s": a, "c_s": c, "a_over_c": a / c if c else None,
            "model_a10": {"a_s": model.a_s, "c_s": model.c_s, "a_over_c": model.a_s / model.c_s}}


# -------------------------------------------------------------------------------------------- share
def share_worker(args: argparse.Namespace) -> None:
    """One process of the share part: build the T2I, say ready, wait for go, run calls for a while."""
    setup = TINY if args.tiny else FULL
    with tempfile.TemporaryDirectory() as tmp:
        t2i = build_t2i(plan_for(setup), args.device, setup.tiny, Path(tmp))
        items = [(p, i) for i, p in enumerate(prompts(setup.share_batch))]
        t2i.generate_batch(items)  # warm-up: kernels chosen, memory allocated
        sync(args.device)
        Path(args.ready).touch()
        deadline = time.monotonic() + 600
        while not Path(args.go).exists():
            if time.monotonic() > deadline:
                raise TimeoutError("no go signal")
            time.sleep(0.01)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < setup.share_seconds:
            t2i.generate_batch(items)
            sync(args.device)
            calls += 1
        wall = time.perf_counter() - start
    Path(args.out).write_text(json.dumps({"calls": calls, "wall_s": wall, "s_per_call": wall / calls}))


def run_together(n: int, device: str, tiny: bool, work: Path) -> list[dict]:
    """``n`` share workers started together (a go file once all are ready); their results."""
    go = work / f"go{n}"
    procs = []
    for i in range(n):
        files = {k: str(work / f"{k}{n}_{i}") for k in ("ready", "out")}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--share-worker", "--device", device,
               "--ready", files["ready"], "--go", str(go), "--out", files["out"]] + (["--tiny"] if tiny else [])
        procs.append((subprocess.Popen(cmd, cwd=REPO_ROOT), files))
    deadline = time.monotonic() + 600
    while not all(Path(f["ready"]).exists() for _, f in procs):
        failed = [p.returncode for p, _ in procs if p.poll() not in (None, 0)]
        if failed or time.monotonic() > deadline:
            for p, _ in procs:
                p.kill()
            raise RuntimeError(f"share workers failed to start (exit codes {failed})")
        time.sleep(0.05)
    go.touch()
    for p, _ in procs:
        if p.wait() != 0:
            raise RuntimeError(f"a share worker exited {p.returncode}")
    return [json.loads(Path(f["out"]).read_text()) for _, f in procs]


def part_share(setup: Setup, device: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        alone = run_together(1, device, setup.tiny, Path(tmp))[0]
        shared = run_together(2, device, setup.tiny, Path(tmp))
    per_process = [alone["s_per_call"] / s["s_per_call"] for s in shared]
    return {"batch": setup.share_batch, "seconds": setup.share_seconds, "alone": alone, "shared": shared,
            "per_process_speed_shared_over_alone": per_process, "together_over_alone": sum(per_process),
            "model_assumes": {"per_process": 0.5, "together": 1.0}}


# ---------------------------------------------------------------------------------------------- llm
def build_llm(shape: dict, device: str):
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    cfg = MistralConfig(**shape)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in the serving dtype on the device: no float32 copy of 7B weights
    try:
        with torch.device(device):
            model = MistralForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    return model.eval(), dtype


def decode_step_fn(model, n: int, context: int, dtype, device: str):
    """A decode step for ``n`` sequences with ``context`` tokens of KV cache each: per layer the q/k/v/o
    and MLP matmuls on the model's own weights and grouped-query attention (the query heads of one KV
    head as a query of length heads/kv_heads: the same scores as GQA, on any torch 2) over a static
    cache; then the LM head. Norms, rotary and the cache write are left out (a few per cent of the bytes)."""
    import torch
    import torch.nn.functional as F

    cfg = model.config
    heads, kv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
    layers = model.model.layers
    caches = [(torch.randn(n, kv, context, hd, dtype=dtype, device=device),
               torch.randn(n, kv, context, hd, dtype=dtype, device=device)) for _ in layers]
    x0 = torch.randn(n, cfg.hidden_size, dtype=dtype, device=device)
    lm_head = model.lm_head.weight

    def step():
        x = x0
        for layer, (k_cache, v_cache) in zip(layers, caches):
            att, mlp = layer.self_attn, layer.mlp
            q = F.linear(x, att.q_proj.weight).view(n, kv, heads // kv, hd)
            F.linear(x, att.k_proj.weight), F.linear(x, att.v_proj.weight)  # the new token's k, v (cache write left out)
            o = F.scaled_dot_product_attention(q, k_cache, v_cache).reshape(n, heads * hd)
            x = x + F.linear(o, att.o_proj.weight)
            x = x + F.linear(F.silu(F.linear(x, mlp.gate_proj.weight)) * F.linear(x, mlp.up_proj.weight), mlp.down_proj.weight)
        return F.linear(x, lm_head)

    return step


def time_step(step, device: str, repeats: int) -> tuple[float, bool]:
    """Seconds per step; on CUDA replayed from a captured graph (True) when capture works."""
    import torch

    if device.startswith("cuda"):
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    step()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                step()
            graph.replay()
            return timed(graph.replay, device, repeats), True
        except RuntimeError as exc:  # capture unsupported here: eager timing, flagged in the output
            print(f"CUDA graph capture failed ({exc}); timing the decode step eagerly", file=sys.stderr)
    return timed(step, device, repeats), False


def part_llm(setup: Setup, device: str) -> dict:
    import torch

    with torch.no_grad():  # the captured graph too: no autograd records on the weights
        return _part_llm(setup, device)


def _part_llm(setup: Setup, device: str) -> dict:
    import torch

    model, dtype = build_llm(setup.llm, device)
    out: dict = {"shape": setup.llm, "dtype": str(dtype).replace("torch.", "")}
    params = sum(p.numel() for p in model.parameters())
    out["parameters"] = params
    gen = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, setup.llm["vocab_size"], (1, setup.prompt_tokens), generator=gen).to(device)
    s = timed(lambda: model.model(input_ids=ids, use_cache=False), device, max(setup.repeats, 2))
    out["prefill"] = {"tokens": setup.prompt_tokens, "s": s, "s_per_token": s / setup.prompt_tokens}
    cache = model(input_ids=ids, use_cache=True).past_key_values
    nxt = ids[:, -1:]

    def eager():
        model(input_ids=nxt, past_key_values=cache, use_cache=True)  # the cache grows by one token per call

    out["eager_decode_n1_s"] = timed(eager, device, 4)
    del cache
    rows = []
    for n in setup.decode_seqs:
        step = decode_step_fn(model, n, setup.context_tokens, dtype, device)
        t, graphed = time_step(step, device, 10)
        rows.append({"seqs": n, "step_s": t, "cuda_graph": graphed})
        del step
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    out["decode"] = rows
    t0, t1 = fit_line([(r["seqs"], r["step_s"]) for r in rows])
    out["fit"] = {"t0_s": t0, "t1_s": t1}
    # latency.py's recipe (the VLM's text model) at this context, on the L40S it assumes and on this GPU
    kv_per_token = 2 * setup.llm["num_hidden_layers"] * setup.llm["num_key_value_heads"] * (
        setup.llm["hidden_size"] // setup.llm["num_attention_heads"]) * 2
    l40s = llava_next_mistral7b_l40s(64, 0.9, mean_context=setup.context_tokens)
    out["recipe_l40s"] = {"t0_s": l40s.t0_s, "t1_s": l40s.t1_s, "prefill_s_per_token": l40s.prefill_s_per_token}
    sheet = datasheet(device_name(device)) if device.startswith("cuda") else None
    if sheet is not None:
        key, tflops, gbps = sheet
        out["datasheet"] = {"gpu": key, "tflops_fp16_dense": tflops, "gb_per_s": gbps}
        out.update(against_recipe(2 * params, kv_per_token * setup.context_tokens, 2 * params, t0, t1,
                                  out["prefill"]["s_per_token"], tflops, gbps))
    return out


def against_recipe(weight_bytes: float, kv_bytes_per_seq: float, flops_per_token: float, t0: float, t1: float,
                   prefill_s_per_token: float, tflops: float, gbps: float) -> dict:
    """latency.py's decode/prefill recipe with this GPU's datasheet peaks (bandwidth at 0.7, FLOPs at 0.5), and the
    efficiencies the measured t0, t1 and prefill imply for those two assumptions (what would replace them).
    t1's compute term is left out of the implied KV bandwidth: at decode it is small beside the KV read."""
    bw, flops = gbps * 1e9, tflops * 1e12
    return {
        "recipe_this_gpu": {"t0_s": weight_bytes / (0.7 * bw), "t1_s": kv_bytes_per_seq / (0.7 * bw) + flops_per_token / (0.5 * flops),
                            "prefill_s_per_token": flops_per_token / (0.5 * flops)},
        "implied": {"bw_efficiency_t0": weight_bytes / t0 / bw if t0 > 0 else None,
                    "bw_efficiency_kv": kv_bytes_per_seq / t1 / bw if t1 > 0 else None,
                    "flop_efficiency_prefill": flops_per_token / prefill_s_per_token / flops},
    }


# -------------------------------------------------------------------------------------------- report
def format_report(result: dict) -> str:
    lines = [f"device: {result['device']}  ({'TINY dry run: tiny shapes, figures meaningless' if result['tiny'] else 'real-size shapes, random weights: speed only'})"]
    if "t2i" in result:
        t = result["t2i"]
        lines += ["", "t2i (SD1.5-size, {}², {} steps, CFG)".format(result["setup"]["image_size"], result["setup"]["steps"]),
                  "  batch  s/batch"] + [f"  {r['batch']:>5}  {r['s_per_batch']:.3f}" for r in t["rows"]]
        lines.append(f"  fit a + c·b: a = {t['a_s']:.3f} s, c = {t['c_s']:.3f} s/image, a/c = {t['a_over_c']:.3f}"
                     f"   (latency.py, A10 published: a = {t['model_a10']['a_s']:.3f}, c = {t['model_a10']['c_s']:.3f}, a/c = {t['model_a10']['a_over_c']:.3f})")
    if "share" in result:
        s = result["share"]
        lines += ["", f"share (T2I batch {s['batch']}, {s['seconds']:.0f} s per run)",
                  f"  alone: {s['alone']['s_per_call']:.3f} s/call ({s['alone']['calls']} calls)",
                  "  two processes at once: " + ", ".join(f"{x['s_per_call']:.3f} s/call ({x['calls']} calls)" for x in s["shared"]),
                  "  per-process speed shared ÷ alone: " + ", ".join(f"{r:.3f}" for r in s["per_process_speed_shared_over_alone"])
                  + f"   (the model assumes 0.5); together ÷ alone: {s['together_over_alone']:.3f} (assumes 1.0)"]
    if "llm" in result:
        m = result["llm"]
        lines += ["", f"llm (Mistral-7B-shaped, {m['parameters'] / 1e9:.2f}e9 parameters, {m['dtype']})",
                  f"  prefill {m['prefill']['tokens']} tokens: {m['prefill']['s']:.3f} s = {m['prefill']['s_per_token'] * 1e3:.4f} ms/token",
                  f"  eager transformers decode step, n = 1: {m['eager_decode_n1_s'] * 1e3:.2f} ms",
                  "  captured decode step (floor):  seqs  ms/step"]
        lines += [f"                                {r['seqs']:>5}  {r['step_s'] * 1e3:.3f}{'' if r['cuda_graph'] else ' (eager)'}" for r in m["decode"]]
        lines.append(f"  fit t0 + t1·n: t0 = {m['fit']['t0_s'] * 1e3:.3f} ms, t1 = {m['fit']['t1_s'] * 1e3:.4f} ms per sequence")
        r = m["recipe_l40s"]
        lines.append(f"  latency.py recipe on its L40S: t0 = {r['t0_s'] * 1e3:.2f} ms, t1 = {r['t1_s'] * 1e3:.3f} ms, prefill {r['prefill_s_per_token'] * 1e3:.4f} ms/token")
        if "recipe_this_gpu" in m:
            r, i = m["recipe_this_gpu"], m["implied"]
            lines.append(f"  the same recipe with {m['datasheet']['gpu']}'s datasheet: t0 = {r['t0_s'] * 1e3:.2f} ms, t1 = {r['t1_s'] * 1e3:.3f} ms, prefill {r['prefill_s_per_token'] * 1e3:.4f} ms/token")
            lines.append("  implied efficiencies (recipe assumes bandwidth 0.7, FLOPs 0.5): "
                         + ", ".join(f"{k} {v:.3f}" for k, v in i.items() if v is not None))
        else:
            lines.append("  (no datasheet entry for this device: implied efficiencies not computed)")
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="torch device (cuda, cuda:1, cpu)")
    ap.add_argument("--parts", default="t2i,share,llm", help="comma-separated: t2i, share, llm (default: all, in that order)")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes: a seconds-long dry run that checks the script runs")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON to this file")
    ap.add_argument("--share-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ready", help=argparse.SUPPRESS)
    ap.add_argument("--go", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    unknown = set(args.parts.split(",")) - {"t2i", "share", "llm"}
    if unknown:
        ap.error(f"--parts: unknown {sorted(unknown)} (known: t2i, share, llm)")
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    from actors.torch_device import resolve_device

    args.device = resolve_device(args.device)
    if args.share_worker:
        share_worker(args)
        return {}
    setup = TINY if args.tiny else FULL
    result = {"device": device_name(args.device), "tiny": setup.tiny, "setup": asdict(setup),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "host_cpus": os.cpu_count()}
    parts = {"t2i": part_t2i, "share": part_share, "llm": part_llm}
    for name in args.parts.split(","):
        t = time.perf_counter()
        result[name] = parts[name](setup, args.device)
        result[name]["part_s"] = time.perf_counter() - t
        if args.json is not None:  # after every part: a run cut by its time limit keeps what it measured
            args.json.write_text(json.dumps(result, indent=2))
    print(format_report(result))
    return result


if __name__ == "__main__":
    main()
