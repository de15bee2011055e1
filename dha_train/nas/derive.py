"""The standalone child network: only the chosen operations, trained weights, alpha folded.

Frozen units already carry their alpha in the BN affine (folded by the search). For units
not frozen yet, alpha is folded into a copy of the supernet before the weights are copied,
so the supernet itself is untouched. Parameter-free operations (pools, identity edges in a
cell) have no weights to fold into: their scale is dropped, as it is when such a unit
freezes in the supernet; after ``search.freeze_all()`` the child equals the supernet exactly.
"""

from __future__ import annotations

import copy

from torch import nn

from dha_train.nas.search import ArchitectureSearch
from dha_train.spaces import build_network
from dha_train.spaces.arch import Architecture
from dha_train.spaces.base import Supernet

__all__ = ["derive_child"]


def derive_child(supernet: Supernet, search: ArchitectureSearch) -> tuple[Architecture, nn.Module]:
    """The current architecture and its network built by ``build_network`` with the
    supernet's trained weights (a plain ``nn.Module``, no alpha multiplications)."""
    support = search.current_support()
    arch = supernet.architecture(support)
    source = supernet
    unfrozen = [u for u, f in enumerate(search.frozen) if not f]
    if unfrozen:
        dense = search.dense_alpha(support)
        source = copy.deepcopy(supernet)
        for unit in unfrozen:
            source.fold_unit_scale(unit, dense[unit])
    child = build_network(arch)
    child.load_state_dict(source.child_state_dict(support), strict=True)
    child.to(next(supernet.parameters()).device)
    child.train(supernet.training)
    return arch, child
