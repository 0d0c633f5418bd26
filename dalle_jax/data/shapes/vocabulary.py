"""The world of `shapes`: its shapes, colours, sizes, places and relations, and the words for them.

Every colour has exactly one word, so a caption names a colour unambiguously; shapes, sizes,
places and relations have synonyms, so a model must learn words, not template ids.
"""

SHAPES = ("circle", "square", "triangle", "star", "heart", "cross", "diamond", "hexagon")
SHAPE_WORDS = {
    "circle": ("circle", "disk"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "star": ("star",),
    "heart": ("heart",),
    "cross": ("cross", "plus sign"),
    "diamond": ("diamond", "rhombus"),
    "hexagon": ("hexagon",),
}

# Object colours (name -> RGB): far apart from each other and from every background.
COLOURS = {
    "red": (225, 25, 25),
    "green": (30, 165, 50),
    "blue": (35, 65, 225),
    "yellow": (245, 215, 20),
    "orange": (245, 135, 20),
    "purple": (135, 45, 190),
    "pink": (245, 115, 195),
    "cyan": (25, 205, 215),
    "brown": (125, 75, 30),
}
BACKGROUNDS = {
    "white": (255, 255, 255),
    "light grey": (205, 205, 205),
    "dark grey": (60, 60, 60),
    "beige": (240, 230, 195),
    "pale blue": (205, 225, 250),
}

SIZES = ("small", "large")
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}

# A 3×3 grid, row-major: index = 3 * row + column.
POSITIONS = (
    "top left", "top", "top right",
    "left", "centre", "right",
    "bottom left", "bottom", "bottom right",
)
POSITION_PHRASES = {
    "top left": ("in the top left", "in the upper left corner"),
    "top": ("at the top", "at the top middle"),
    "top right": ("in the top right", "in the upper right corner"),
    "left": ("on the left", "at the left side"),
    "centre": ("in the centre", "in the middle"),
    "right": ("on the right", "at the right side"),
    "bottom left": ("in the bottom left", "in the lower left corner"),
    "bottom": ("at the bottom", "at the bottom middle"),
    "bottom right": ("in the bottom right", "in the lower right corner"),
}

# Relation of the first object to the second; 'none' for one-object scenes.
RELATIONS = ("none", "left of", "right of", "above", "below")
RELATION_PHRASES = {
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}

# Short words for the `words` variant (no colour words, so captions stay unambiguous).
WORDS = (
    "sun", "cat", "dog", "tree", "moon", "fish", "bird", "car", "house", "boat", "rain", "snow",
    "star", "leaf", "rock", "sea", "sky", "fox", "owl", "bee", "jazz", "art", "code", "tea",
)

DEFAULT_HELDOUT_PAIRS = (("red", "circle"), ("blue", "square"), ("green", "triangle"),
                         ("yellow", "star"))


def article(word: str) -> str:
    """'a' or 'an' before `word`."""
    return "an" if word[0] in "aeiou" else "a"
