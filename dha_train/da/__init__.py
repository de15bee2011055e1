"""Data augmentation: the 14 operations (Sec. 3.1) and the policy p(tau) over op pairs (Eq. 2)."""
