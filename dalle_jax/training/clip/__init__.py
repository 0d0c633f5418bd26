"""The reranker's training: the symmetric InfoNCE loss with hard negatives (`loss`) and the task
the shared loop runs (`trainer`)."""
