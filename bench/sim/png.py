"""A bar chart as a PNG, in plain Python (zlib and struct): the simulator needs one picture, not a plotting
library. Text is drawn in a 5x7 pixel font, upper case."""

from __future__ import annotations

import math
import struct
import zlib
from typing import Sequence

_FONT = {
    "0": (14, 17, 19, 21, 25, 17, 14), "1": (4, 12, 4, 4, 4, 4, 14), "2": (14, 17, 1, 2, 4, 8, 31),
    "3": (31, 2, 4, 2, 1, 17, 14), "4": (2, 6, 10, 18, 31, 2, 2), "5": (31, 16, 30, 1, 1, 17, 14),
    "6": (6, 8, 16, 30, 17, 17, 14), "7": (31, 1, 2, 4, 8, 8, 8), "8": (14, 17, 17, 14, 17, 17, 14),
    "9": (14, 17, 17, 15, 1, 2, 12), "A": (14, 17, 17, 31, 17, 17, 17), "B": (30, 17, 17, 30, 17, 17, 30),
    "C": (14, 17, 16, 16, 16, 17, 14), "D": (28, 18, 17, 17, 17, 18, 28), "E": (31, 16, 16, 30, 16, 16, 31),
    "F": (31, 16, 16, 30, 16, 16, 16), "G": (14, 17, 16, 23, 17, 17, 15), "H": (17, 17, 17, 31, 17, 17, 17),
    "I": (14, 4, 4, 4, 4, 4, 14), "J": (7, 2, 2, 2, 2, 18, 12), "K": (17, 18, 20, 24, 20, 18, 17),
    "L": (16, 16, 16, 16, 16, 16, 31), "M": (17, 27, 21, 21, 17, 17, 17), "N": (17, 17, 25, 21, 19, 17, 17),
    "O": (14, 17, 17, 17, 17, 17, 14), "P": (30, 17, 17, 30, 16, 16, 16), "Q": (14, 17, 17, 17, 21, 18, 13),
    "R": (30, 17, 17, 30, 20, 18, 17), "S": (15, 16, 16, 14, 1, 1, 30), "T": (31, 4, 4, 4, 4, 4, 4),
    "U": (17, 17, 17, 17, 17, 17, 14), "V": (17, 17, 17, 17, 17, 10, 4), "W": (17, 17, 17, 21, 21, 21, 10),
    "X": (17, 17, 10, 4, 10, 17, 17), "Y": (17, 17, 17, 10, 4, 4, 4), "Z": (31, 1, 2, 4, 8, 16, 31),
    ".": (0, 0, 0, 0, 0, 12, 12), ",": (0, 0, 0, 0, 12, 4, 8), "%": (24, 25, 2, 4, 8, 19, 3),
    "(": (2, 4, 8, 8, 8, 4, 2), ")": (8, 4, 2, 2, 2, 4, 8), "/": (0, 1, 2, 4, 8, 16, 0),
    "-": (0, 0, 0, 31, 0, 0, 0), "+": (0, 4, 4, 31, 4, 4, 0), ":": (0, 12, 12, 0, 12, 12, 0),
    "=": (0, 0, 31, 0, 31, 0, 0), "_": (0, 0, 0, 0, 0, 0, 31), " ": (0,) * 7,
    ">": (8, 4, 2, 1, 2, 4, 8), "<": (2, 4, 8, 16, 8, 4, 2),
}
BLACK, GREY, LIGHT, WHITE = (0, 0, 0), (110, 110, 110), (225, 225, 225), (255, 255, 255)
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189), (214, 39, 40), (140, 86, 75)]


class Canvas:
    def __init__(self, width: int, height: int):
        self.w, self.h = width, height
        self.px = bytearray(WHITE * (width * height))

    def rect(self, x0: int, y0: int, x1: int, y1: int, colour: tuple[int, int, int]) -> None:
        x0, x1 = max(0, min(x0, x1)), min(self.w, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.h, max(y0, y1))
        row = bytes(colour) * (x1 - x0)
        for y in range(y0, y1):
            i = (y * self.w + x0) * 3
            self.px[i:i + len(row)] = row

    def text(self, x: int, y: int, s: str, colour: tuple[int, int, int] = BLACK, scale: int = 2) -> None:
        for ch in s.upper():
            glyph = _FONT.get(ch, _FONT[" "])
            for r, bits in enumerate(glyph):
                for c in range(5):
                    if bits >> (4 - c) & 1:
                        self.rect(x + c * scale, y + r * scale, x + (c + 1) * scale, y + (r + 1) * scale, colour)
            x += 6 * scale

    def save(self, path: str) -> None:
        raw = b"".join(b"\0" + bytes(self.px[y * self.w * 3:(y + 1) * self.w * 3]) for y in range(self.h))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        with open(path, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0))
                    + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def text_width(s: str, scale: int = 2) -> int:
    return len(s) * 6 * scale


def bar_panels(path: str, title: str, groups: Sequence[str], series: Sequence[str],
               panels: Sequence[tuple[str, Sequence[Sequence[tuple[float, float, float]]]]]) -> None:
    """Panels side by side, each a grouped bar chart on a log scale (hours). panels[i] = (name, values) with
    values[group][series] = (mean, low, high): a bar for the mean, a whisker from low to high."""
    pw, ph, top, left, bottom = 420, 360, 70, 70, 60
    canvas = Canvas(left + len(panels) * (pw + left) + 10, top + ph + bottom + 30)
    canvas.text(10, 10, title, scale=2)
    lo_dec, hi_dec = -2, 4                               # 0.01 h to 10,000 h
    for p, (name, values) in enumerate(panels):
        x0 = left + p * (pw + left)
        canvas.text(x0, top - 28, name, scale=2)

        def y_of(v: float) -> int:
            v = min(max(v, 10 ** lo_dec), 10 ** hi_dec)
            return top + ph - int((math.log10(v) - lo_dec) / (hi_dec - lo_dec) * ph)
        for d in range(lo_dec, hi_dec + 1):
            y = y_of(10 ** d)
            canvas.rect(x0, y, x0 + pw, y + 1, LIGHT)
            label = f"{10 ** d:g}"
            canvas.text(x0 - text_width(label) - 6, y - 7, label, GREY)
        canvas.rect(x0, top, x0 + 1, top + ph, GREY)
        canvas.rect(x0, top + ph, x0 + pw, top + ph + 1, GREY)
        gw = pw // max(1, len(groups))
        bw = max(4, (gw - 16) // max(1, len(series)))
        for g, group in enumerate(groups):
            gx = x0 + g * gw + 8
            for s in range(len(series)):
                mean, low, high = values[g][s]
                bx = gx + s * bw
                canvas.rect(bx, y_of(mean), bx + bw - 2, top + ph, COLOURS[s % len(COLOURS)])
                if high > low:
                    cx = bx + bw // 2 - 1
                    canvas.rect(cx, y_of(high), cx + 1, y_of(low) + 1, BLACK)
            canvas.text(gx + (gw - 16) // 2 - text_width(group) // 2, top + ph + 8, group)
    lx = left
    for s, name in enumerate(series):
        canvas.rect(lx, top + ph + 40, lx + 16, top + ph + 56, COLOURS[s % len(COLOURS)])
        canvas.text(lx + 22, top + ph + 42, name)
        lx += 40 + text_width(name)
    canvas.save(path)
