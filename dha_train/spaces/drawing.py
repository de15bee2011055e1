"""Pictures of architecture records (each space's ``draw``), logged beside their JSON.

Drawn with matplotlib's object API (``Figure``), so no pyplot state or backend is touched.

MobileNet space: one bar per searchable layer, its height the kernel size and its colour the
expansion ratio (identity layers left empty). Cell space: the normal and the reduction cell
as DAGs (inputs c_{k-2}, c_{k-1}, nodes 0-3, output), each edge labelled with its operation.
"""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from dha_train.spaces.arch import CellArch, MobileNetArch

__all__ = ["draw_mobilenet", "draw_cell"]

_EXPANSION_COLOURS = {3: "tab:blue", 6: "tab:orange"}


def draw_mobilenet(arch: MobileNetArch) -> Figure:
    """One bar per searchable layer: height = kernel size, colour = expansion ratio."""
    fig = Figure(figsize=(max(7, len(arch.blocks) * 0.4), 3.6))
    ax = fig.subplots()
    for i, block in enumerate(arch.blocks):
        if block == "identity":
            ax.bar(i, 0.3, color="white", edgecolor="grey", hatch="//")
            continue
        kernel = int(block.split("_k")[1].split("_")[0])
        expansion = int(block.split("_e")[1])
        ax.bar(i, kernel, color=_EXPANSION_COLOURS.get(expansion, "grey"))
        ax.text(i, kernel + 0.1, f"e{expansion}", ha="center", fontsize=7)
    ax.set_xticks(range(len(arch.blocks)))
    ax.set_xticklabels([str(i) for i in range(len(arch.blocks))], fontsize=7)
    ax.set_yticks([3, 5, 7])
    ax.set_ylim(0, 8.2)
    ax.set_xlabel("searchable layer")
    ax.set_ylabel("kernel size")
    handles = [
        Patch(color=colour, label=f"expansion ratio {e}")
        for e, colour in _EXPANSION_COLOURS.items()
    ]
    handles.append(Patch(facecolor="white", edgecolor="grey", hatch="//", label="identity (skip)"))
    ax.legend(
        handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False
    )
    ax.set_title(f"mobilenet space, width {arch.width_mult:g}, {arch.resolution} px")
    fig.tight_layout()  # keeps the x-axis label and the legend inside the picture
    return fig


def _draw_dag(ax: Axes, pairs: tuple[tuple[str, int], ...], title: str) -> None:
    inputs = {0: (0.0, 0.8), 1: (0.0, 0.2)}
    nodes = {
        i + 2: (0.3 + 0.15 * i, 0.5 + (0.25 if i % 2 else -0.25)) for i in range(len(pairs) // 2)
    }
    positions = {**inputs, **nodes, -1: (1.0, 0.5)}
    for index, (op, source) in enumerate(pairs):
        target = index // 2 + 2
        (x0, y0), (x1, y1) = positions[source], positions[target]
        ax.annotate(
            "", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "->", "color": "grey"}
        )
        ax.text(
            (x0 + x1) / 2,
            (y0 + y1) / 2,
            op,
            fontsize=6,
            ha="center",
            bbox={"boxstyle": "round", "fc": "white", "ec": "none", "alpha": 0.8},
        )
    for node in nodes:
        x, y = positions[node]
        ax.annotate(
            "",
            xy=positions[-1],
            xytext=(x, y),
            arrowprops={"arrowstyle": "->", "color": "lightgrey", "ls": "--"},
        )
    labels = {0: "c_{k-2}", 1: "c_{k-1}", -1: "c_{k}", **{n: str(n - 2) for n in nodes}}
    for node, (x, y) in positions.items():
        ax.text(
            x,
            y,
            labels[node],
            ha="center",
            va="center",
            fontsize=8,
            bbox={"boxstyle": "circle", "fc": "lightyellow" if node in nodes else "lightblue"},
        )
    ax.set_xlim(-0.1, 1.1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.set_title(title)


def draw_cell(arch: CellArch) -> Figure:
    """The normal and the reduction cell as DAGs, each edge labelled with its operation."""
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    _draw_dag(axes[0], arch.genotype.normal, "normal cell")
    _draw_dag(axes[1], arch.genotype.reduce, "reduction cell")
    fig.suptitle(f"cell space, C={arch.init_channels}, {arch.layers} cells, {arch.resolution} px")
    return fig
