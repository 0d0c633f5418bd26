"""Training: the shared loop, train state, checkpoints, metrics and optimizer helper; one
subpackage per stage (`dvae`, `dalle`, `clip`) with its loss, steps and task."""
