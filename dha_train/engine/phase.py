"""Building the parts of one training phase and saving / loading their state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from dha_train import spaces
from dha_train.da.policy import AugmentPolicy
from dha_train.data import DataBundle, to_unit_float
from dha_train.engine.distributed import GradSync, broadcast_object
from dha_train.engine.evaluation import op_shares
from dha_train.engine.seeding import derive_seed
from dha_train.engine.train_step import StepOutput, StepParts, forward_logits, train_step
from dha_train.hpo import HyperBounds, HyperSGD
from dha_train.modes import Phase
from dha_train.nas.budgets import Budget
from dha_train.nas.cost_model import CostModel
from dha_train.nas.search import ArchitectureSearch
from dha_train.spaces import baseline_architecture
from dha_train.spaces.arch import Architecture
from dha_train.spaces.base import Selection, Supernet
from dha_train.train_config import TrainConfig

__all__ = ["PhaseRun", "build_phase", "make_search"]


def make_search(supernet: Supernet, cfg: TrainConfig, *, phase_steps: int) -> ArchitectureSearch:
    """``ArchitectureSearch`` over ``supernet`` with ``cfg.budget`` and its cost model; the
    warm-up is ``cfg.warmup_fraction`` of the ``phase_steps`` steps of the search phase."""
    budget = cfg.budget if cfg.budget is not None else Budget()
    latency_device = None
    if budget.max_latency_ms is not None:
        latency_device = cfg.latency_device or cfg.device
    cost_model = CostModel(
        supernet, latency_device=latency_device, latency_runtime=cfg.latency_runtime
    )
    if cfg.world_size > 1 and latency_device is not None:  # measured latencies differ per rank
        cost_model.unit_costs, cost_model.fixed = broadcast_object(
            (cost_model.unit_costs, cost_model.fixed)
        )
    return ArchitectureSearch(
        supernet,
        budget,
        cost_model,
        seed=cfg.seed,
        weighting=cfg.arch_weighting,
        freeze_rule=cfg.freeze_rule,
        freeze_window=cfg.freeze_window,
        freeze_rel_tol=cfg.freeze_rel_tol,
        warmup_steps=int(cfg.warmup_fraction * phase_steps),
    )


class PhaseRun:
    """The network, search, policy and optimizers of one phase, and a step over them."""

    def __init__(self, parts: StepParts, hpo_generator: torch.Generator) -> None:
        self.parts = parts
        self.hpo_generator = hpo_generator

    @property
    def net(self) -> nn.Module:
        return self.parts.net

    @property
    def search(self) -> ArchitectureSearch | None:
        return self.parts.search

    @property
    def policy(self) -> AugmentPolicy | None:
        return self.parts.policy

    def step(self, x: Tensor, y: Tensor) -> StepOutput:
        self.parts.net.train()
        return train_step(self.parts, x, y)

    def eta(self) -> tuple[float, float]:
        opt = self.parts.weights_opt
        return float(opt.lr), float(opt.wd)

    def generators(self) -> dict[str, torch.Generator]:
        return {"da": self.parts.generator, "hpo": self.hpo_generator}

    @torch.no_grad()
    def current_selection(self) -> Selection | None:
        return None if self.search is None else self.search.selection()

    def op_shares(self) -> dict[str, float]:
        """Share of each operation in the current architecture (empty without a search)."""
        selection = self.current_selection()
        return {} if selection is None else op_shares(cast(Supernet, self.net), selection)

    def frozen_units(self) -> int:
        return int(self.search.num_frozen) if self.search is not None else 0

    def eval_forward(self) -> Callable[[Tensor], Tensor]:
        """The plain (un-augmented) path through the current architecture."""
        self.net.eval()
        selection = self.current_selection()
        return lambda x: forward_logits(self.parts, x, selection)

    def model_forward(self, model: nn.Module) -> Callable[[Tensor], Tensor]:
        """The plain path through a standalone network (same normalisation and precision)."""
        model.eval()
        parts = StepParts(
            net=model,
            weights_opt=self.parts.weights_opt,
            generator=self.parts.generator,
            mean=self.parts.mean,
            std=self.parts.std,
            amp_dtype=self.parts.amp_dtype,
            channels_last=self.parts.channels_last,
        )
        return lambda x: forward_logits(parts, x, None)

    def final_model(self) -> tuple[Architecture, nn.Module]:
        if self.search is None:
            return self.architecture, self.net
        from dha_train.nas.derive import derive_child

        return derive_child(cast(Supernet, self.net), self.search)

    architecture: Architecture

    def _modules(self) -> dict[str, Any]:
        p = self.parts
        named = {
            "net": p.net,
            "search": p.search,
            "arch_opt": p.arch_opt,
            "policy": p.policy,
            "policy_opt": p.policy_opt,
            "weights_opt": p.weights_opt,
        }
        return {k: v for k, v in named.items() if v is not None}

    def state_dict(self) -> dict[str, Any]:
        return {k: m.state_dict() for k, m in self._modules().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, m in self._modules().items():
            m.load_state_dict(state[k])


def _separate_sampler(
    dataset: Dataset, batch: int, g: torch.Generator, device: torch.device
) -> Callable[[], tuple[Tensor, Tensor]]:
    """Eq. 4's separately drawn training batch (uniform indices from this rank's stream)."""

    def draw() -> tuple[Tensor, Tensor]:
        idx = torch.randint(0, len(dataset), (batch,), generator=g).tolist()
        items = [dataset[i] for i in idx]
        x = to_unit_float(torch.stack([it[0] for it in items]).to(device))
        y = torch.as_tensor([int(it[1]) for it in items], device=device)
        return x, y

    return draw


def build_phase(
    cfg: TrainConfig,
    data: DataBundle,
    phase: Phase,
    *,
    arch: Architecture | None,
    phase_idx: int,
    phase_steps: int,
) -> PhaseRun:
    """Fresh parts for ``phase`` (a re-initialised network in every phase) of ``phase_steps``
    training steps (they set the warm-up length and tau's default learning rate)."""
    device = torch.device(cfg.device)
    search = None
    # The same initial weights on every rank, drawn without touching the process's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "init_weights", index=phase_idx))
        if phase.search:
            supernet = spaces.build_supernet(cfg.space)
            search = make_search(supernet, cfg, phase_steps=phase_steps)
            net: nn.Module = supernet
        else:
            if arch is None:
                arch = cfg.architecture or baseline_architecture(cfg.space)
            net = spaces.build_network(arch)
    cl = cfg.use_channels_last()
    net = net.to(device)
    if cl:
        net = net.to(memory_format=torch.channels_last)
    bounds = (
        HyperBounds(lr=tuple(cfg.lr_bounds), wd=tuple(cfg.wd_bounds)) if phase.learn_hp else None
    )
    weights_opt = HyperSGD(
        list(net.parameters()),
        lr=cfg.lr,
        weight_decay=cfg.wd,
        momentum=cfg.momentum,
        bounds=bounds,
        hyper_lr=cfg.hyper_lr,
    )
    arch_opt = None
    if search is not None:
        search = search.to(device)
        arch_opt = torch.optim.Adam(
            _arch_parameters(search, net),
            lr=cfg.arch_lr,
            betas=cfg.arch_betas,
            weight_decay=cfg.arch_wd,
        )
    policy = policy_opt = None
    if phase.learn_da:
        policy = AugmentPolicy(clip=cfg.tau_clip).to(device)
        policy_opt = torch.optim.Adam(policy.parameters(), lr=cfg.tau_lr_for(phase_steps))
    generator = torch.Generator(device=device).manual_seed(
        derive_seed(cfg.seed, "augment", rank=cfg.rank)
    )
    hpo_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "hpo_batches", rank=cfg.rank))
    shape = (1, 3, 1, 1)
    parts = StepParts(
        net=net,
        weights_opt=weights_opt,
        generator=generator,
        mean=torch.tensor(data.mean, device=device).view(shape),
        std=torch.tensor(data.std, device=device).view(shape),
        search=search,
        arch_opt=arch_opt,
        policy=policy,
        policy_opt=policy_opt,
        learn_hp=phase.learn_hp,
        hpo_batch=cfg.hpo_batch,
        separate_batch=_separate_sampler(data.train, cfg.batch_size, hpo_gen, device),
        grad_clip=cfg.grad_clip,
        hflip=cfg.hflip,
        amp_dtype=torch.bfloat16 if cfg.use_amp() else None,
        channels_last=cl,
        sync=GradSync() if cfg.world_size > 1 else None,
    )
    run = PhaseRun(parts, hpo_gen)
    if arch is not None:
        run.architecture = arch
    return run


def _arch_parameters(search: nn.Module, net: nn.Module) -> list[nn.Parameter]:
    """The search's own parameters (the b vectors), never the network's weights."""
    weights = {id(p) for p in net.parameters()}
    return [p for p in search.parameters() if id(p) not in weights]
