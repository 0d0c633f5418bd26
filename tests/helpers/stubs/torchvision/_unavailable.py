"""Names that exist for `import` only and raise when used."""


def unavailable(name: str):
    """A class standing for torchvision's `name` that cannot be built."""

    class Unavailable:
        def __init__(self, *args, **kwargs):
            raise RuntimeError(f"torchvision.{name} is a test stand-in (tests/helpers/stubs)")

    Unavailable.__name__ = name.rsplit(".", 1)[-1]
    return Unavailable
