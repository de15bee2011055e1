"""One training step of Algorithm 1, lines 3-9 (and of the modes that drop parts of it); the
loop around it is :mod:`dha_train.engine.trainer`'s.

Order within a step (Algorithm 1): sample a DA pair per sample from p(tau) (line 3), recover
alpha and take the child (lines 4-5, ``search.sample()``), forward only the selected ops and
take per-sample losses, update tau with Eq. 2 (line 6), update theta with the unweighted mean
loss (Eq. 3, line 7), update b with the same training loss plus the budget penalty (line 8),
update eta with Eq. 4 (line 9).

Eq. 4's second mini-batch (``hpo_batch``):
- ``"separate"`` (faithful to Algorithm 1 line 9 and the public code): after theta moves, an
  extra forward/backward at theta_{t+1} on a separately drawn training batch (augmented the
  same way, same child network).
- ``"next"`` (default; a deviation to keep a DHA step cheap): the second mini-batch is the next
  step's training batch. Its gradient at theta_{t+1} is computed by the next step anyway, so
  eta_t is updated at the start of the next step, before theta moves, at the cost of one dot
  product. That batch is augmented with the next sampled pairs and runs the next sampled child.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dha_train.da.augment import apply_pairs, sample_magnitudes, standard_augment
from dha_train.da.policy import AugmentPolicy
from dha_train.data import to_unit_float
from dha_train.engine.distributed import GradSync
from dha_train.hpo import HyperSGD
from dha_train.nas.search import ArchitectureSearch
from dha_train.spaces.base import Selection
from dha_train.timing import synchronize

__all__ = ["StepParts", "StepOutput", "PhaseTimer", "train_step", "forward_logits"]

Timer = Callable[[str], contextlib.AbstractContextManager[Any]]


def _no_timer(name: str) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


class PhaseTimer:
    """Accumulates wall time per named phase (synchronising CUDA around each phase)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


@dataclass
class StepParts:
    """Everything a step touches. ``search``/``policy``/``arch_opt`` are None when unused."""

    net: nn.Module
    weights_opt: HyperSGD
    generator: torch.Generator  # this rank's DA stream
    mean: Tensor  # (1, 3, 1, 1) on the device
    std: Tensor
    search: ArchitectureSearch | None = None
    arch_opt: torch.optim.Optimizer | None = None
    policy: AugmentPolicy | None = None
    policy_opt: torch.optim.Optimizer | None = None
    learn_hp: bool = False
    hpo_batch: str = "next"
    separate_batch: Callable[[], tuple[Tensor, Tensor]] | None = None
    grad_clip: float = 5.0
    hflip: bool = True
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    # Multi-process: averages/sums gradients across ranks (distributed.GradSync); None = alone.
    sync: GradSync | None = None
    # Test hook: n -> (pairs, magnitudes, signs) instead of drawing them from p(tau) with
    # ``generator`` (lets a test give a 2-rank and a 1-process run the same per-sample draws).
    draw_da: Callable[[int], tuple[Tensor, Tensor, Tensor]] | None = None


@dataclass
class StepOutput:
    """Device tensors (no host sync): mean loss, number correct, batch size."""

    loss: Tensor
    correct: Tensor
    count: int


def forward_logits(parts: StepParts, x: Tensor, selection: Selection | None) -> Tensor:
    """Normalise ``[0, 1]`` images and run the network (the supernet with a selection)."""
    x = (x - parts.mean) / parts.std
    if parts.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = (
        torch.autocast(x.device.type, dtype=parts.amp_dtype)
        if parts.amp_dtype is not None
        else contextlib.nullcontext()
    )
    with autocast:
        out = parts.net(x) if selection is None else parts.net(x, selection)
    return out.float()


def _augment(parts: StepParts, x: Tensor, timer: Timer) -> tuple[Tensor, Tensor | None]:
    """The augmented batch as float in [0, 1] (``x`` is uint8 or float in [0, 1]), and the
    sampled DA pairs (None without a policy). The DA ops work on uint8 and convert once."""
    if parts.policy is None:
        with timer("augment"):
            return to_unit_float(standard_augment(x, parts.generator, flip=parts.hflip)), None
    with timer("da_sampling"):
        if parts.draw_da is not None:
            pairs, mags, signs = parts.draw_da(x.shape[0])
        else:
            pairs = parts.policy.sample(x.shape[0], parts.generator)
            mags, signs = sample_magnitudes(x.shape[0], parts.generator)
    with timer("augment"):
        return apply_pairs(x, pairs, mags, signs), pairs


def _detached(selection: Selection | None) -> Selection | None:
    if selection is None or selection.weights is None:
        return selection
    weights = [None if w is None else w.detach() for w in selection.weights]
    return Selection(selection.support, weights)


def train_step(parts: StepParts, x: Tensor, y: Tensor, timer: Timer = _no_timer) -> StepOutput:
    """One step of Algorithm 1 restricted to the parts present in ``parts``."""
    xa, pairs = _augment(parts, x, timer)
    with timer("forward"):
        selection = parts.search.sample() if parts.search is not None else None
        # b trains once the warm-up is over and while some unit is still searched
        searching = (
            parts.search is not None and not parts.search.all_frozen and not parts.search.in_warmup
        )
        logits = forward_logits(parts, xa, selection)
        per_sample = F.cross_entropy(logits, y, reduction="none")
        loss = per_sample.mean()
        objective = loss + parts.search.penalty() if searching else loss
    if parts.policy is not None and parts.policy_opt is not None and pairs is not None:
        with timer("tau_update"):  # Eq. 2
            parts.policy_opt.zero_grad(set_to_none=True)
            parts.policy.loss(pairs, per_sample).backward()
            if parts.sync is not None:  # Eq. 2 sums over the samples of every rank
                parts.sync.sum_(list(parts.policy.parameters()))
            parts.policy_opt.step()
            parts.policy.clamp_()
    with timer("backward"):
        parts.weights_opt.zero_grad()
        if parts.arch_opt is not None:
            parts.arch_opt.zero_grad(set_to_none=True)
        objective.backward()
    params = parts.weights_opt.params
    if parts.sync is not None:
        with timer("all_reduce"):  # the mean loss over all ranks' samples
            b = list(parts.search.parameters()) if searching else []
            parts.sync.mean_([*params, *b])
    if parts.learn_hp and parts.hpo_batch == "next":
        with timer("hpo"):  # Eq. 4 for eta_{t-1}, gradient of this batch at theta_t
            parts.weights_opt.hyper_step([p.grad for p in params])
    with timer("weights_update"):  # Eq. 3
        if parts.grad_clip > 0:
            nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], parts.grad_clip)
        parts.weights_opt.step()
    if searching and parts.arch_opt is not None:
        with timer("b_update"):
            parts.arch_opt.step()
    if parts.learn_hp and parts.hpo_batch == "separate":
        with timer("hpo"):
            _separate_hyper_step(parts, _detached(selection), timer)
    with torch.no_grad():
        correct = (logits.argmax(dim=1) == y).sum()
    return StepOutput(loss.detach(), correct, int(y.shape[0]))


def _separate_hyper_step(parts: StepParts, selection: Selection | None, timer: Timer) -> None:
    """Eq. 4 on a separately drawn training batch: extra forward/backward at theta_{t+1}."""
    if parts.separate_batch is None:
        raise ValueError("hpo_batch='separate' needs StepParts.separate_batch")
    x2, y2 = parts.separate_batch()
    x2, _ = _augment(parts, x2, _no_timer)
    params = parts.weights_opt.params
    stepped = [params[i] for i in parts.weights_opt.last_stepped]
    loss2 = F.cross_entropy(forward_logits(parts, x2, selection), y2)
    grads = torch.autograd.grad(loss2, stepped, allow_unused=True)
    full: list[Tensor | None] = [None] * len(params)
    for i, g in zip(parts.weights_opt.last_stepped, grads, strict=True):
        full[i] = g
    if parts.sync is not None:
        parts.sync.mean_grads_(full)
    parts.weights_opt.hyper_step(full)
