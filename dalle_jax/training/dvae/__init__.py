"""Stage 1's training: the loss (`loss`), the jitted steps (`steps`), the paper's annealing
schedules (`schedules`) and the task the shared loop runs (`trainer`)."""
