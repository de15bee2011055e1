"""Supernet step time over the derived child's plain training step, same batch, both spaces.

Supernet step = ISTA sample + forward + penalty + backward + weight and b updates; child
step = forward + backward + weight update. The two alternate in rounds of 3 steps, and the
ratio printed is the median over rounds of the within-round ratio. Goal: ratio <= 1.1. Run:
``python benchmarks/bench_supernet_step.py [--device cuda] [--batch 64]``.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from dha_train.engine.host_memory import retain_freed_memory
from dha_train.nas.budgets import Budget
from dha_train.nas.cost_model import CostModel
from dha_train.nas.derive import derive_child
from dha_train.nas.search import ArchitectureSearch
from dha_train.spaces import build_supernet
from dha_train.spaces.base import SpaceConfig
from dha_train.timing import compare_interleaved

CONFIGS = {
    "mobilenet": SpaceConfig("mobilenet", 10, 32, width_mult=1.0),
    "cell": SpaceConfig("cell", 10, 32, init_channels=16, layers=8),
}


def bench(
    cfg: SpaceConfig, device: torch.device, batch: int, rounds: int
) -> dict[str, tuple[float, float]]:
    torch.manual_seed(0)
    net = build_supernet(cfg)
    search = ArchitectureSearch(net, Budget(), CostModel(net), seed=0)
    net.to(device)
    search.to(device)
    x = torch.rand(batch, 3, cfg.resolution, cfg.resolution, device=device)
    y = torch.randint(0, cfg.num_classes, (batch,), device=device)
    w_opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    # lr 0: b's update still runs (and is timed) but b stays, so every recovery returns the
    # support the child is derived from, and both sides train the same architecture.
    b_opt = torch.optim.Adam(search.parameters(), lr=0.0, betas=(0.5, 0.999))

    def super_step() -> None:
        loss = F.cross_entropy(net(x, search.sample()), y) + search.penalty()
        w_opt.zero_grad(set_to_none=True)
        b_opt.zero_grad(set_to_none=True)
        loss.backward()
        w_opt.step()
        b_opt.step()

    _, child = derive_child(net, search)
    c_opt = torch.optim.SGD(child.parameters(), lr=0.01, momentum=0.9)

    def child_step() -> None:
        loss = F.cross_entropy(child(x), y)
        c_opt.zero_grad(set_to_none=True)
        loss.backward()
        c_opt.step()

    return compare_interleaved(
        {"supernet": super_step, "child": child_step},
        baseline="child",
        device=device,
        rounds=rounds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds of 3 steps")
    args = parser.parse_args()
    retain_freed_memory()
    device = torch.device(args.device)
    print(f"device={device} batch={args.batch} threads={torch.get_num_threads()}")
    print(f"{'space':10s} {'supernet ms':>12s} {'child ms':>10s} {'ratio':>7s}  (goal <= 1.1)")
    for name, cfg in CONFIGS.items():
        timed = bench(cfg, device, args.batch, args.rounds)
        (s, ratio), (c, _) = timed["supernet"], timed["child"]
        print(f"{name:10s} {s:12.2f} {c:10.2f} {ratio:7.3f}")


if __name__ == "__main__":
    main()
