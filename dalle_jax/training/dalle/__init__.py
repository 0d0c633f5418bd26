"""Stage 2's training: the 1/8–7/8 weighted loss (`loss`), AdamW with the plateau schedule and
gradient accumulation (`optimizer`), the jitted steps (`steps`) and the task the shared loop runs
(`trainer`)."""
