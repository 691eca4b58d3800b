"""`printable`, the one escape for everything gpusched shows on a terminal.

Job names, file names and reasons come from users, and a raw ESC, CR, BEL or bidi override would let one
user write on another's terminal. A module of its own, importing nothing, so that gpuschedctl's read
commands can escape without loading the listing, the job model and the job-file parser.
"""

from __future__ import annotations


def printable(text: str, keep: str = "") -> str:
    r"""`text` with every character a terminal could act on written as an escape: C0 and C1 controls (ESC,
    CR, BEL, ...), DEL, format characters (bidi overrides such as U+202E, zero-width ones), line and
    paragraph separators, surrogates (undecodable file names) and unassigned code points: \x1b, \u202e, ...
    Characters in `keep` (say "\n\t" for a log) pass. A printable result is returned unchanged, so
    escaping twice is escaping once."""
    if text.isprintable():
        return text
    out = []
    for c in text:
        if c.isprintable() or c in keep:
            out.append(c)
        else:
            n = ord(c)
            out.append(f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")
    return "".join(out)
