"""How each variant of object scenes is drawn: object sizes (as radii), centre jitter, backgrounds.

`objects` draws small and large objects anywhere near their cell's centre on five backgrounds.
`bold` draws every object large, exactly at its cell's centre, on white: at 72 px with the dVAE's
8-pixel codes a cell is 3 × 3 codes and an object 2.7 codes across, always on the same
codes, so its outline survives the code grid and a small model learns the world quickly.
"""

from __future__ import annotations

import dataclasses

from dalle_jax.data.shapes.vocabulary import BACKGROUNDS


@dataclasses.dataclass(frozen=True)
class Style:
    """A variant's drawing: per size, the radius and the largest shift of the centre, both as
    shares of a grid cell's side (radius + jitter stays under half a cell, so objects in
    different cells never touch); and the backgrounds a scene may have."""

    radius: dict
    jitter: dict
    backgrounds: tuple

    @property
    def sizes(self) -> tuple[str, ...]:
        """The sizes objects of this variant come in."""
        return tuple(self.radius)


STYLES = {
    "objects": Style(radius={"small": 0.25, "large": 0.40}, jitter={"small": 0.15, "large": 0.05},
                     backgrounds=tuple(BACKGROUNDS)),
    "bold": Style(radius={"large": 0.45}, jitter={"large": 0.0}, backgrounds=("white",)),
}

# Every radius an object may be drawn at (reading a scene back from its pixels tries each).
RADII = tuple(sorted({r for s in STYLES.values() for r in s.radius.values()}))
# The smallest object's radius (the checker's least area of an object's colour).
SMALLEST_RADIUS = RADII[0]
