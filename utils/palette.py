"""The PASCAL VOC bit-interleaved colour map (no project imports)."""
from __future__ import annotations

import numpy as np


def voc_colormap(n: int = 512) -> np.ndarray:
    """uint8 (n, 3): bit 3k + c of the index goes to bit 7 - k of channel c (SPEC 10.2)."""
    colours = np.zeros((n, 3), dtype=np.uint8)
    for index in range(n):
        i, colour = index, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                colour[channel] |= ((i >> channel) & 1) << shift
            i >>= 3
        colours[index] = colour
    return colours
