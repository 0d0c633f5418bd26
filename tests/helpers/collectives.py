"""Counting collectives in `bench compile`'s `collectives_by_axis`."""


def tensor_gathers_in_loop(by_axis: dict) -> int:
    """All-gathers over `tensor` inside loops, from `collectives_by_axis`."""
    return sum(n for axes, n in by_axis.get("all-gather", {}).items()
               if "tensor" in axes and "in loop" in axes)
