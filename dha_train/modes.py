"""The training modes (Algorithm 1, Algorithm 2, the Table 3 ablations, a fixed baseline).

A mode is one or two *phases*; a phase says whether the architecture is searched, whether DA
is learned (tau, Eq. 2) or the fixed standard augmentation is used, and whether lr / wd are
learned (Eq. 4) or follow a fixed cosine schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dha_train.errors import ConfigError

__all__ = ["Phase", "MODES", "mode_phases"]


@dataclass(frozen=True)
class Phase:
    """One stage of training."""

    search: bool  # ISTA architecture search on the supernet (else a fixed network)
    learn_da: bool  # tau and Eq. 2 (else random crop + flip)
    learn_hp: bool  # Eq. 4 on (lr, wd) (else fixed wd, cosine lr)
    fresh_from_search: bool = False  # a fixed network derived from the previous phase


_NAS = Phase(search=True, learn_da=False, learn_hp=False)

# mode -> its phases. Sequential modes search first, then re-initialise the derived network
# and train it from scratch (Algorithm 2, App. B).
MODES: dict[str, tuple[Phase, ...]] = {
    "dha": (Phase(search=True, learn_da=True, learn_hp=True),),
    "nas": (_NAS,),
    "nas_da": (Phase(search=True, learn_da=True, learn_hp=False),),
    "nas_hpo": (Phase(search=True, learn_da=False, learn_hp=True),),
    "sequential": (_NAS, Phase(False, True, True, fresh_from_search=True)),
    "sequential_da": (_NAS, Phase(False, True, False, fresh_from_search=True)),
    "sequential_hpo": (_NAS, Phase(False, False, True, fresh_from_search=True)),
    "baseline": (Phase(search=False, learn_da=False, learn_hp=False),),
    # DA and HPO on a fixed architecture (TrainConfig.architecture, else the space's baseline):
    # the study's "random" row trains a random budget-feasible child this way
    "da_hpo": (Phase(search=False, learn_da=True, learn_hp=True),),
}


def mode_phases(mode: str, epochs: int, search_fraction: float) -> list[tuple[Phase, int]]:
    """The phases of ``mode`` with their epoch counts.

    The paper does not give Algorithm 2's split of the epochs; sequential modes spend
    ``ceil(search_fraction * epochs)`` epochs searching (default half) and the rest training
    the derived network from scratch.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    phases = MODES[mode]
    if len(phases) == 1:
        return [(phases[0], epochs)]
    if epochs < 2:
        raise ConfigError(f"mode {mode!r} needs epochs >= 2 (search, then train); got {epochs}")
    first = min(epochs - 1, max(1, math.ceil(search_fraction * epochs)))
    return [(phases[0], first), (phases[1], epochs - first)]
