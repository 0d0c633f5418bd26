"""Training: train state, loop, schedules, losses, checkpointing."""
