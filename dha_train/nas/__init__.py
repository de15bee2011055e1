"""Neural architecture search: ISTA encoding (Eqs. 5-7), budgets (Eq. 1), the cost model,
the search (freezing, forward weights) and the derived child."""
