"""Sec. 3.2: learning rate and weight decay as bounded continuous hyper-parameters.

``HyperSGD`` is the weights' optimizer ``OP`` of Eq. 3 (SGD with momentum, PyTorch's update
rule: ``buf = mu * buf + g + wd * theta``, ``theta -= lr * buf``) and knows its own derivative
with respect to ``eta = (lr, wd)``, with ``theta_t`` treated as independent of ``eta_{t-1}``
(the paper's one-step approximation)::

    d theta_{t+1} / d lr = -buf_t          d theta_{t+1} / d wd = -lr_t * theta_t

Eq. 4 is then one dot product with the gradient ``g`` of the training loss at
``theta_{t+1}``: ``dL/dlr = -g . buf_t``, ``dL/dwd = -lr_t g . theta_t``, followed by
``eta <- clamp(eta - beta * dL/deta, low, up)``. ``theta_t`` is recovered exactly from
``theta_{t+1} + lr_t * buf_t``, so no copy of the weights is kept.

lr and wd live in 0-dim tensors on the device, so a step needs no host synchronisation.
Only parameters that received a gradient move (a supernet runs a few candidates per step);
the hypergradient uses exactly the parameters that moved in the last step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dha_train.errors import ConfigError

__all__ = ["HyperBounds", "HyperSGD"]


@dataclass(frozen=True)
class HyperBounds:
    """``[low, up]`` for lr and wd (App. A.2: the bounds keep them positive and not large)."""

    lr: tuple[float, float] = (1e-3, 0.2)
    wd: tuple[float, float] = (0.0, 1e-2)

    def check(self, lr: float, wd: float) -> None:
        for name, value, (low, up) in (("lr", lr, self.lr), ("wd", wd, self.wd)):
            if not 0.0 <= low <= up:
                raise ConfigError(
                    f"{name} bounds {(low, up)} are not 0 <= low <= up; give e.g. {name}_low < "
                    f"{name}_up"
                )
            if not low <= value <= up:
                raise ConfigError(
                    f"initial {name}={value} lies outside its bounds [{low}, {up}]; choose a "
                    "value inside them or widen the bounds"
                )


class HyperSGD:
    """SGD with momentum whose lr and wd are learnable by the one-step hypergradient (Eq. 4)."""

    def __init__(
        self,
        params: Sequence[nn.Parameter],
        *,
        lr: float,
        weight_decay: float,
        momentum: float = 0.9,
        bounds: HyperBounds | None = None,
        hyper_lr: float = 0.0,
    ) -> None:
        self.params: list[Tensor] = list(params)
        self.bounds = bounds or HyperBounds(lr=(lr, lr), wd=(weight_decay, weight_decay))
        self.bounds.check(lr, weight_decay)
        device, dtype = self.params[0].device, self.params[0].dtype
        self.lr = torch.tensor(float(lr), device=device, dtype=dtype)
        self.wd = torch.tensor(float(weight_decay), device=device, dtype=dtype)
        self.momentum = momentum
        self.hyper_lr = hyper_lr
        self.buffers: dict[int, Tensor] = {}
        self.last_stepped: list[int] = []  # indices that moved in the last step
        self.last_lr = torch.zeros((), device=device, dtype=dtype)  # lr_t used by the last step

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def set_lr(self, lr: float) -> None:
        """Set lr from outside (a fixed schedule in modes without HPO)."""
        self.lr.fill_(lr)

    @torch.no_grad()
    def step(self) -> None:
        """Eq. 3: one SGD-momentum step on every parameter that has a gradient."""
        idx = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not idx:
            return
        params: list[Tensor] = [self.params[i] for i in idx]
        for i, p in zip(idx, params, strict=True):
            if i not in self.buffers:
                self.buffers[i] = torch.zeros_like(p)
        bufs = [self.buffers[i] for i in idx]
        grads = [p.grad for p in params]
        torch._foreach_mul_(bufs, self.momentum)
        torch._foreach_add_(bufs, grads)  # type: ignore[arg-type]
        torch._foreach_add_(bufs, list(torch._foreach_mul(params, self.wd)))
        torch._foreach_add_(params, list(torch._foreach_mul(bufs, -self.lr)))
        self.last_stepped = idx
        self.last_lr.copy_(self.lr)

    @torch.no_grad()
    def hypergradient(self, grads: Sequence[Tensor | None]) -> Tensor:
        """``(dL/dlr, dL/dwd)`` given ``grads`` of the loss at ``theta_{t+1}``, one per param.

        Parameters that did not move in the last step have zero derivative w.r.t. eta, and a
        parameter without a gradient contributes nothing.
        """
        pick = [i for i in self.last_stepped if grads[i] is not None]
        if not pick:
            return torch.zeros(2, device=self.lr.device, dtype=self.lr.dtype)
        g = [grads[i] for i in pick]
        bufs = [self.buffers[i] for i in pick]
        params = [self.params[i] for i in pick]
        g_buf = torch.cat([t.reshape(-1) for t in torch._foreach_mul(g, bufs)]).sum()  # type: ignore[arg-type]
        g_par = torch.cat([t.reshape(-1) for t in torch._foreach_mul(g, params)]).sum()  # type: ignore[arg-type]
        g_theta_t = g_par + self.last_lr * g_buf  # g . theta_t, theta_t = theta + lr_t * buf
        return torch.stack([-g_buf, -self.last_lr * g_theta_t])

    @torch.no_grad()
    def hyper_step(self, grads: Sequence[Tensor | None]) -> Tensor:
        """Eq. 4 with the bounds: ``eta <- clamp(eta - beta * dL/deta)``; returns dL/deta."""
        h = self.hypergradient(grads)
        self.lr.sub_(self.hyper_lr * h[0]).clamp_(*self.bounds.lr)
        self.wd.sub_(self.hyper_lr * h[1]).clamp_(*self.bounds.wd)
        return h

    def state_dict(self) -> dict[str, Any]:
        return {
            "lr": self.lr.detach().cpu(),
            "wd": self.wd.detach().cpu(),
            "last_lr": self.last_lr.detach().cpu(),
            "buffers": {i: b.detach().cpu() for i, b in self.buffers.items()},
            "last_stepped": list(self.last_stepped),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.lr.device
        self.lr.copy_(state["lr"])
        self.wd.copy_(state["wd"])
        self.last_lr.copy_(state["last_lr"])
        self.buffers = {int(i): b.to(device) for i, b in state["buffers"].items()}
        self.last_stepped = [int(i) for i in state["last_stepped"]]
