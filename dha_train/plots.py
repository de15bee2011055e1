"""End-of-run figures: p(tau) heatmap, architecture evolution (paper Fig. 5), lr / wd."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from dha_train.da.operations import OPS
from dha_train.da.policy import policy_stats
from dha_train.engine.sink import MetricsSink

__all__ = ["tau_heatmap", "architecture_evolution", "hyper_trajectories", "log_final_figures"]


def tau_heatmap(probs: np.ndarray) -> Figure:
    """The 14 x 14 matrix p(tau) as multiples of uniform (row = first op, column = second op),
    on a diverging scale centred on 1 (= 1/196): white is uniform, red more likely, blue less,
    so a reader sees at once whether the policy learned anything."""
    ratio = np.asarray(probs, dtype=float) * probs.size
    stats = policy_stats(torch.as_tensor(probs))
    spread = max(float(np.abs(np.log(ratio)).max()), 0.05)
    fig = Figure(figsize=(7.5, 6.5))
    ax = fig.add_subplot()
    norm = LogNorm(vmin=np.exp(-spread), vmax=np.exp(spread))
    im = ax.imshow(ratio, cmap="RdBu_r", norm=norm)
    ax.set_xticks(range(len(OPS)), OPS, rotation=90, fontsize=7)
    ax.set_yticks(range(len(OPS)), OPS, fontsize=7)
    ax.set_xlabel("second operation")
    ax.set_ylabel("first operation")
    ax.set_title(
        f"p(tau) / uniform (1/{probs.size}); KL to uniform {stats['tau_kl_uniform']:.4f} nats, "
        f"max {stats['tau_max_x_uniform']:.2f}x",
        fontsize=9,
    )
    bar = fig.colorbar(im, ax=ax)
    bar.set_label("probability as a multiple of uniform (1 = uniform)")
    fig.tight_layout()
    return fig


def architecture_evolution(shares: Sequence[dict[str, float]]) -> Figure:
    """Share of each operation in the current architecture, per epoch (stacked areas)."""
    names = sorted({name for s in shares for name in s})
    epochs = np.arange(1, len(shares) + 1)
    stack = np.array([[s.get(n, 0.0) for s in shares] for n in names])
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    ax.stackplot(epochs, stack, labels=names)
    ax.set_xlabel("epoch")
    ax.set_ylabel("share of operations")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title("architecture evolution")
    fig.tight_layout()
    return fig


def hyper_trajectories(steps: Sequence[int], lr: Sequence[float], wd: Sequence[float]) -> Figure:
    """Learning rate and weight decay against the training step."""
    fig = Figure(figsize=(8, 3.2))
    panels = ((lr, "learning rate", "lr (eta_lr)"), (wd, "weight decay", "wd (eta_wd)"))
    for i, (values, title, label) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.plot(steps, values)
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.grid(alpha=0.3)
        ax.set_title(title)
    fig.tight_layout()
    return fig


def log_final_figures(
    sink: MetricsSink,
    *,
    probs: np.ndarray | None,
    shares: Sequence[dict[str, float]],
    lr_traj: Sequence[tuple[int, float]],
    wd_traj: Sequence[tuple[int, float]],
) -> None:
    """Send the end-of-run figures that apply to this run to ``sink.log_figure``."""
    if probs is not None:
        sink.log_figure(tau_heatmap(probs), "tau_heatmap.png")
    if shares:
        sink.log_figure(architecture_evolution(shares), "architecture_evolution.png")
    if lr_traj:
        steps = [s for s, _ in lr_traj]
        lrs = [v for _, v in lr_traj]
        sink.log_figure(
            hyper_trajectories(steps, lrs, [v for _, v in wd_traj]), "lr_wd_trajectories.png"
        )
