"""PNG plots with matplotlib (Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_all(out: Path, err_rows: list[dict], curve_rows: list[dict], var_rows: list[dict]) -> list[Path]:
    written = []
    plt = _plt()
    for sampler in dict.fromkeys(r["sampler"] for r in err_rows):
        fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=False)
        for ax, kind, title in zip(axes, ("clean", "one_step", "sampled"),
                                   ("(a) clean input", "(b) one-step input", "(c) sampled input")):
            for lab in dict.fromkeys(r["variant"] for r in err_rows):
                sel = sorted((r for r in err_rows if r["sampler"] == sampler and r["variant"] == lab
                              and r["kind"] == kind), key=lambda r: r["index"])
                ax.plot([r["t"] for r in sel], [r["mse"] for r in sel], label=lab, marker=".")
            ax.set_title(f"{title}, {sampler}")
            ax.set_xlabel("timestep t")
            ax.set_ylabel("MSE(ε_eff, ε*)")
            ax.set_yscale("log")
            ax.invert_xaxis()
        axes[-1].legend(fontsize=7)
        fig.tight_layout()
        path = out / f"fig_step_mse_{sampler}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    if curve_rows:
        fig, ax = plt.subplots(figsize=(6, 4))
        for lab in dict.fromkeys(r["variant"] for r in curve_rows):
            steps = sorted({r["step"] for r in curve_rows if r["variant"] == lab})
            vals = [[r["score"] for r in curve_rows if r["variant"] == lab and r["step"] == s] for s in steps]
            means = [sum(v) / len(v) for v in vals]
            stds = [(sum((x - m) ** 2 for x in v) / (len(v) - 1)) ** 0.5 if len(v) > 1 else 0.0
                    for v, m in zip(vals, means)]
            ax.errorbar(steps, means, yerr=stds, label=lab, marker="o", capsize=3)
        ax.set_xlabel("fine-tuning iterations")
        ax.set_ylabel("metric")
        ax.legend()
        fig.tight_layout()
        path = out / "fig_metric_vs_iterations.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    if var_rows:
        samplers = list(dict.fromkeys(r["sampler"] for r in var_rows))
        fig, axes = plt.subplots(1, len(samplers), figsize=(6 * len(samplers), 4), squeeze=False)
        for ax, sampler in zip(axes[0], samplers):
            for lab in dict.fromkeys(r["variant"] for r in var_rows):
                sel = sorted((r for r in var_rows if r["sampler"] == sampler and r["variant"] == lab),
                             key=lambda r: r["index"])
                ax.plot([r["index"] for r in sel], [r["variance_error"]
                                                    for r in sel], label=lab, marker=".")
            ax.axhline(0.0, color="grey", lw=0.8)
            ax.set_title(f"variance error, {sampler}")
            ax.set_xlabel("sampling step (0 = x_T, last = output)")
            ax.set_ylabel("Var(sampled x_t) / Var(q(x_t)) − 1")
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        path = out / "fig_variance_error.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def plot_samples(out: Path, cell_key: str, rows: list[tuple[str, "object"]]) -> Path:
    """One row of images per variant (all from the same initial noise), for a qualitative comparison."""
    plt = _plt()
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.0 * max(len(x) for _, x in rows), 1.1 * len(rows)),
                             squeeze=False)
    for ax, (label, images) in zip(axes[:, 0], rows):
        strip = images[:, 0].clamp(-1, 1).add(1).div(2)  # (n, H, W) in [0, 1]
        ax.imshow(strip.permute(1, 0, 2).reshape(strip.shape[1], -1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    axes[0, 0].set_title(f"{cell_key}, same initial noise in every row")
    fig.tight_layout()
    path = out / f"fig_samples_{cell_key}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
