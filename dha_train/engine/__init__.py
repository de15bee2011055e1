"""The training engine: Algorithms 1 and 2 (trainer), one step, phases, evaluation,
sampling, seeds, checkpoints and the distributed glue."""
