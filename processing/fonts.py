"""Where the TrueType fonts of randomised drawings are: their names (the paper's list) and the folders searched.

Whether RDKit can really draw with a font found here is checked by :func:`rendering.find_fonts`.

Only flat relative imports: this file travels as Hugging Face remote code next to the image processor.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["FONT_NAMES", "font_dirs", "locate_font"]

# The paper's randomised drawing picks from these TrueType files (as shipped with matplotlib). cmmi10 (Computer
# Modern math italic), which the reference list also had, is left out: its character map puts harpoons at the
# ASCII '+' and '-' positions, so every formal charge would be drawn as an arrow.
FONT_NAMES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
)


def font_dirs() -> list[str]:
    """Folders that may hold TrueType files, matplotlib's bundled fonts first, then the usual system ones."""
    dirs = []
    try:
        import matplotlib

        dirs.append(os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf"))
    except ImportError:  # matplotlib is a dependency, but the system fonts may still do
        pass
    home = os.path.expanduser("~")
    dirs += [
        "/usr/share/fonts",
        "/usr/local/share/fonts",
        os.path.join(home, ".fonts"),
        os.path.join(home, ".local", "share", "fonts"),
        "/Library/Fonts",
        "/System/Library/Fonts",
        os.path.join(home, "Library", "Fonts"),
        os.path.join(os.environ.get("WINDIR", r"C:\Windows"), "Fonts"),
    ]
    return [d for d in dirs if os.path.isdir(d)]


def locate_font(name: str, dirs: Sequence[str]) -> str | None:
    """The path of the font file `name` in the first of `dirs` (or their subfolders) that has it."""
    for d in dirs:
        direct = os.path.join(d, name)
        if os.path.isfile(direct):
            return direct
        # System font folders nest by family (e.g. /usr/share/fonts/truetype/dejavu/).
        for root, _, files in os.walk(d):
            if name in files:
                return os.path.join(root, name)
    return None
