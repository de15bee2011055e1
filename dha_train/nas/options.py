"""Choice lists of the search's settings, importable without torch (the CLI reads them)."""

from __future__ import annotations

__all__ = ["FREEZE_RULES", "WEIGHTINGS"]

# search.ArchitectureSearch's freezing rules: alpha's relative movement over a window of steps
# (default), or ISTA-NAS's absolute movement per epoch
FREEZE_RULES = ("window", "ista")
# search.forward_weights: |alpha_S| / ||alpha_S||_1 (default), or the paper's |alpha_S|
WEIGHTINGS = ("l1", "alpha")
