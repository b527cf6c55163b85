"""The named colours and shape kinds the synthetic scenes use and the emulator can see.

The scene generator (the truth) and the detector (`vision.py`) share only these names and
RGB values, never geometry code, so the detector still has to find every shape from the
pixels. The colours are far apart in RGB (every pair more than 80 apart, most more than
150) and none of them lies on the straight line between another colour and a light
background, so a pixel blended at a shape's edge (anti-aliasing, JPEG, downscaling) is
rejected as "no colour" instead of being mistaken for a neighbouring palette colour.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

PALETTE_RGB: Final[dict[str, tuple[int, int, int]]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 20),
    "magenta": (220, 40, 200),
    "cyan": (30, 200, 220),
    "orange": (245, 130, 20),
    "purple": (110, 40, 150),
    "black": (20, 20, 20),
}
COLOUR_NAMES: Final[tuple[str, ...]] = tuple(PALETTE_RGB)
PALETTE_ARRAY_F32: Final[npt.NDArray[np.float32]] = np.array(
    list(PALETTE_RGB.values()), dtype=np.float32
)

# The kinds a scene can draw; a "square" is a rectangle and an "oval" an ellipse for the
# purpose of matching words in prompts.
KINDS: Final[tuple[str, ...]] = ("rectangle", "circle", "ellipse", "triangle")
KIND_SYNONYMS: Final[dict[str, str]] = {
    "rectangle": "rectangle",
    "rectangles": "rectangle",
    "rect": "rectangle",
    "square": "rectangle",
    "squares": "rectangle",
    "circle": "circle",
    "circles": "circle",
    "disc": "circle",
    "ellipse": "ellipse",
    "ellipses": "ellipse",
    "oval": "ellipse",
    "ovals": "ellipse",
    "triangle": "triangle",
    "triangles": "triangle",
}
COLOUR_SYNONYMS: Final[dict[str, str]] = {
    **{name: name for name in PALETTE_RGB},
    "violet": "purple",
    "pink": "magenta",
    "fuchsia": "magenta",
    "turquoise": "cyan",
    "aqua": "cyan",
}
