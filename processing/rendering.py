"""Drawing molecules as 224 x 224 RGB pictures with RDKit, plain or in a randomised style, fast.

Two steps, split so the expensive one runs once per molecule:

* :func:`prepare_for_drawing` (or :class:`CoordinateCache`) computes 2D coordinates, kekulizes and wedges bonds
  (RDKit's ``PrepareMolForDrawing``, ~10 ms for a ChEMBL molecule);
* :func:`render` draws a prepared molecule in a :class:`DrawingStyle` without recomputing anything.

Two drawing back ends, picked by ``render(..., backend=...)``:

``"cairo"``
    RDKit's ``MolDraw2DCairo`` exactly as RDKit draws it. The price is a PNG round trip: Cairo's drawer only hands
    its pixels out as a zlib-compressed PNG, and compressing and decoding it costs more than the drawing itself.
``"fast"``
    RDKit lays the molecule out (``MolDraw2DSVG``, the same layout code) and this module replays the drawing
    commands into an in-memory Cairo surface through ``ctypes``, using the Cairo and FreeType libraries that ship
    with RDKit, then reads the pixels directly: no PNG. Lines are rasterised by the same library with the same
    widths, caps and joins (with Cairo's 4 x 4-sample antialiasing, which halves the cost and changes only edge
    pixels' last bits); atom labels are drawn with the chosen TrueType font, but placed with RDKit's built-in
    character metrics (its non-FreeType layout), so label spacing and the fitted scale can differ from ``"cairo"``
    by a few pixels, and glyphs wider than those metrics allow (bold faces) are condensed to fit. About twice as
    fast as ``"cairo"`` for random styles. Anything the replay does not understand (RDKit emits only lines,
    polygons and characters for molecules) falls back to ``"cairo"`` for that picture.
``"auto"`` (default)
    ``"fast"`` for styles that name a font file (all of :func:`random_style`'s), where label placement is already
    one more random variation; ``"cairo"`` for RDKit's default style, so plain pictures are exactly RDKit's.

Threads are fine: each thread gets its own Cairo surface and font faces; so are DataLoader worker processes. Set
``MOLECLIP_FAST_RENDER=0`` to switch the fast back end off.

Only flat relative imports: this file travels as Hugging Face remote code next to the image processor.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import html
import io
import os
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from rdkit import Chem, RDConfig
from rdkit.Chem import rdDepictor
from rdkit.Chem.Draw import rdMolDraw2D

from .molecules import InvalidMoleculeError, quiet_rdkit, to_mol

__all__ = [
    "BACKENDS",
    "FONT_NAMES",
    "R_GROUP_ELEMENTS",
    "CoordinateCache",
    "DrawingStyle",
    "FontNotFoundError",
    "atom_draw_coords",
    "fast_backend_info",
    "fast_backend_available",
    "find_fonts",
    "prepare_for_drawing",
    "r_group_labels",
    "random_style",
    "render",
]

BACKENDS = ("auto", "fast", "cairo")

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

# R1..R8 in the paper's order.
R_GROUP_ELEMENTS = ("C", "O", "N", "S", "F", "Cl", "Br", "I")
_R_INDEX = {symbol: i + 1 for i, symbol in enumerate(R_GROUP_ELEMENTS)}


class FontNotFoundError(RuntimeError):
    """None of the TrueType fonts for randomised drawing could be found or used by RDKit."""


# ------------------------------------------------------------------------------------------------------------ fonts
def _font_dirs() -> list[str]:
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


def _locate(name: str, dirs: Sequence[str]) -> str | None:
    for d in dirs:
        direct = os.path.join(d, name)
        if os.path.isfile(direct):
            return direct
        # System font folders nest by family (e.g. /usr/share/fonts/truetype/dejavu/).
        for root, _, files in os.walk(d):
            if name in files:
                return os.path.join(root, name)
    return None


_PROBE_SMILES = "OC(=O)c1ccc(Cl)cc1[NH3+]"


def _rdkit_can_use(font_file: str, reference: np.ndarray) -> bool:
    """RDKit silently falls back to its built-in font when it cannot load a file; a drawing that differs from the
    built-in font's drawing shows the file was really used."""
    try:
        with quiet_rdkit():
            drawn = _render_cairo(_probe_molecule(), 96, DrawingStyle(font_file=font_file, font_size=20), False)
    except Exception:  # a broken font file can make FreeType raise through RDKit
        return False
    return not np.array_equal(drawn, reference)


@lru_cache(maxsize=1)
def _probe_molecule() -> Chem.Mol:
    return prepare_for_drawing(Chem.MolFromSmiles(_PROBE_SMILES))


@lru_cache(maxsize=1)
def _find_fonts_cached() -> tuple[str, ...]:
    dirs = _font_dirs()
    located = [p for p in (_locate(name, dirs) for name in FONT_NAMES) if p is not None]
    reference = _render_cairo(_probe_molecule(), 96, DrawingStyle(font_size=20), False)
    usable = tuple(p for p in located if _rdkit_can_use(p, reference))
    if not usable:
        searched = ", ".join(dirs) or "(no font folders exist)"
        raise FontNotFoundError(
            f"None of the TrueType fonts for randomised drawing ({', '.join(FONT_NAMES[:3])}, ...) was found and "
            f"usable by RDKit; searched {searched}. They ship with matplotlib (`pip install matplotlib`); on Debian or "
            "Ubuntu `apt-get install fonts-dejavu-core` also works. Or pass your own list: random_style(rng, fonts=[...])."
        )
    return usable


def find_fonts() -> list[str]:
    """Paths of the TrueType fonts for randomised drawing that exist here and RDKit's FreeType drawer can load.

    Searches matplotlib's bundled fonts first, then the usual system font folders, for :data:`FONT_NAMES`; each
    candidate is checked by drawing a probe molecule with it. Cached per process. Raises :class:`FontNotFoundError`
    if none qualifies.
    """
    return list(_find_fonts_cached())


# ------------------------------------------------------------------------------------------------------------ style
@dataclass(frozen=True)
class DrawingStyle:
    """How to draw a molecule. ``DrawingStyle()`` is RDKit's default drawing (the paper's plain rendering).

    Attributes:
        line_width: bond line width in pixels.
        font_size: one size, in pixels, for all atom labels; ``None``: RDKit scales labels with the drawing.
        bond_length: fixed bond length in pixels (RDKit shrinks it if the molecule would not fit); ``None``: fit.
        multiple_bond_offset: gap between the lines of double/triple bonds, as a fraction of the bond length;
            ``None``: RDKit's default (0.15).
        rotation: rotation of the drawing in degrees.
        font_file: TrueType file for the labels; ``None``: RDKit's built-in font.
        padding: blank margin around the molecule, as a fraction of the picture size.
    """

    line_width: float = 2
    font_size: int | None = None
    bond_length: float | None = None
    multiple_bond_offset: float | None = None
    rotation: float = 0.0
    font_file: str | None = None
    padding: float = 0.05

    def __post_init__(self):
        if not self.line_width > 0:
            raise ValueError(f"line_width must be positive, got {self.line_width}")
        if self.font_size is not None and not self.font_size > 0:
            raise ValueError(f"font_size must be positive or None, got {self.font_size}")
        if self.bond_length is not None and not self.bond_length > 0:
            raise ValueError(f"bond_length must be positive or None, got {self.bond_length}")
        if self.multiple_bond_offset is not None and not 0 < self.multiple_bond_offset < 1:
            raise ValueError(f"multiple_bond_offset must be in (0, 1) or None, got {self.multiple_bond_offset}")
        if not 0 <= self.padding < 0.5:
            raise ValueError(f"padding must be in [0, 0.5), got {self.padding}")
        if self.font_file is not None and not os.path.isfile(self.font_file):
            raise FileNotFoundError(f"font file {self.font_file!r} does not exist")


def random_style(rng: np.random.Generator, fonts: Sequence[str] | None = None) -> DrawingStyle:
    """The paper's generation-level augmentation: a random :class:`DrawingStyle`.

    Line width uniform in {2, 3, 4, 5}; one label font size uniform in 14..24; fixed bond length uniform in
    [20, 100] px; multiple-bond offset uniform in [0.1, 0.4]; rotation uniform in [0, 360) degrees; font uniform from
    ``fonts`` (default :func:`find_fonts`). The same seeded ``rng`` state gives the same style.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    fonts = find_fonts() if fonts is None else list(fonts)
    if not fonts:
        raise ValueError("fonts is empty; pass at least one TrueType file or None for find_fonts()")
    line_width = int(rng.integers(2, 6))
    font_size = int(rng.integers(14, 25))
    bond_length = float(rng.uniform(20.0, 100.0))
    offset = float(rng.uniform(0.1, 0.4))
    rotation = float(rng.uniform(0.0, 360.0))
    font_file = fonts[int(rng.integers(len(fonts)))]
    return DrawingStyle(line_width, font_size, bond_length, offset, rotation, font_file)


def _apply_style(options, style: DrawingStyle, use_font_file: bool) -> None:
    # The molecule is prepared once up front; RDKit would otherwise copy and re-kekulize it on every drawing.
    options.prepareMolsBeforeDrawing = False
    # Cairo's PNG would otherwise carry the molecule as SMILES and mol block text, computed on every drawing.
    options.includeMetadata = False
    options.bondLineWidth = float(style.line_width)
    if style.font_size is not None:
        options.minFontSize = int(style.font_size)
        options.maxFontSize = int(style.font_size)
    if style.bond_length is not None:
        options.fixedBondLength = float(style.bond_length)
    if style.multiple_bond_offset is not None:
        options.multipleBondOffset = float(style.multiple_bond_offset)
    options.rotate = float(style.rotation)
    options.padding = float(style.padding)
    if use_font_file and style.font_file is not None:
        options.fontFile = style.font_file


# -------------------------------------------------------------------------------------------------------- molecules
def prepare_for_drawing(mol: Chem.Mol) -> Chem.Mol:
    """A copy of ``mol`` ready to draw: 2D coordinates, kekulized, chiral hydrogens added, bonds wedged.

    This is the expensive step of drawing; do it once per molecule (see :class:`CoordinateCache`). Existing 2D
    coordinates are kept; 3D ones are replaced by a 2D layout. Raises :class:`InvalidMoleculeError` if RDKit cannot
    lay the molecule out.
    """
    if not isinstance(mol, Chem.Mol):
        raise TypeError(f"prepare_for_drawing expects an RDKit Mol, got {type(mol).__name__}")
    if mol.GetNumAtoms() == 0:
        raise InvalidMoleculeError("", None, "has no atoms")
    force_2d = mol.GetNumConformers() > 0 and mol.GetConformer().Is3D()
    error = None
    # Kekulization can fail for odd aromatic systems that still sanitized; such molecules draw fine with aromatic
    # bonds, so try that before giving up.
    for kekulize in (True, False):
        try:
            with quiet_rdkit():
                return rdMolDraw2D.PrepareMolForDrawing(
                    mol, kekulize=kekulize, addChiralHs=True, wedgeBonds=True, forceCoords=force_2d
                )
        except (RuntimeError, ValueError) as err:
            error = err
    raise InvalidMoleculeError(_smiles_of(mol), None, f"cannot be laid out for drawing ({error})")


def _smiles_of(mol: Chem.Mol) -> str:
    try:
        return Chem.MolToSmiles(mol)
    except Exception:  # only for error messages
        return "<unprintable molecule>"


class CoordinateCache:
    """Least-recently-used cache of prepared molecules, keyed by SMILES string (or by the Mol object itself).

    ``get`` parses with :func:`~molecules.to_mol` (bad SMILES raise :class:`InvalidMoleculeError` naming the entry),
    prepares with :func:`prepare_for_drawing`, and keeps at most ``max_size`` molecules (a prepared ChEMBL molecule
    takes a few kilobytes). Mol keys hold a reference to the Mol, so its ``id`` cannot be reused while cached.
    Thread-safe. Pickling keeps the size limit but not the contents (each DataLoader worker fills its own).
    """

    def __init__(self, max_size: int = 100_000):
        if int(max_size) < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size}")
        self.max_size = int(max_size)
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _key(item):
        if isinstance(item, str):
            return item.strip()
        if isinstance(item, Chem.Mol):
            return ("mol", id(item))
        return None

    def get(self, item, index: int | None = None) -> Chem.Mol:
        """The prepared molecule for a SMILES string or Mol; ``index`` is the position reported in errors."""
        key = self._key(item)
        if key is not None:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return entry[1]
        mol = to_mol(item, index)  # raises TypeError for anything but str / Mol
        try:
            prepared = prepare_for_drawing(mol)
        except InvalidMoleculeError as err:
            smiles = item.strip() if isinstance(item, str) else err.smiles
            raise InvalidMoleculeError(smiles, index, err.reason) from err
        with self._lock:
            self.misses += 1
            self._entries[key] = (item, prepared)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_size:
                self._entries.popitem(last=False)
        return prepared

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, item) -> bool:
        return self._key(item) in self._entries

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0

    def __getstate__(self):
        return {"max_size": self.max_size}

    def __setstate__(self, state):
        self.__init__(state["max_size"])

    def __repr__(self) -> str:
        return f"CoordinateCache(max_size={self.max_size}, size={len(self)}, hits={self.hits}, misses={self.misses})"


# ---------------------------------------------------------------------------------------------------------- R groups
def r_group_labels(mol: Chem.Mol) -> dict[int, str]:
    """Atom index -> ``"R<i>"`` for every terminal atom (one bond, single) of element i in :data:`R_GROUP_ELEMENTS`.

    C -> R1, O -> R2, N -> R3, S -> R4, F -> R5, Cl -> R6, Br -> R7, I -> R8, as in the paper's distribution-shift
    experiment.
    """
    labels = {}
    for atom in mol.GetAtoms():
        number = _R_INDEX.get(atom.GetSymbol())
        if number is None or atom.GetDegree() != 1:
            continue
        if atom.GetBonds()[0].GetBondType() != Chem.BondType.SINGLE:
            continue
        labels[atom.GetIdx()] = f"R{number}"
    return labels


def _with_r_labels(mol: Chem.Mol, labels: dict[int, str]) -> Chem.Mol:
    """A copy in which the labelled atoms are dummy atoms carrying their R label, so RDKit draws the label in place
    of the element (bonds stop short of it as for any label) and colours it black, like the reference drawings."""
    work = Chem.RWMol(mol)
    for idx, label in labels.items():
        atom = work.GetAtomWithIdx(idx)
        atom.SetAtomicNum(0)
        atom.SetFormalCharge(0)
        atom.SetIsotope(0)
        atom.SetNumRadicalElectrons(0)
        atom.SetNoImplicit(True)
        atom.SetNumExplicitHs(0)
        atom.SetProp("atomLabel", label)
    work.UpdatePropertyCache(strict=False)
    return work.GetMol()


# ----------------------------------------------------------------------------------------------------------- render
def render(
    prepared_mol: Chem.Mol,
    size: int = 224,
    style: DrawingStyle | None = None,
    r_groups: bool = False,
    backend: str = "auto",
) -> np.ndarray:
    """Draw a prepared molecule: uint8 array (size, size, 3), RGB, white background.

    ``prepared_mol`` comes from :func:`prepare_for_drawing` or :meth:`CoordinateCache.get`; its coordinates are used
    as they are. ``style`` defaults to RDKit's plain drawing. ``r_groups=True`` draws terminal C/O/N/S/F/Cl/Br/I
    atoms as black R1..R8 labels at their positions (see :func:`r_group_labels`); RDKit fits the drawing to the new
    labels, so where a replaced atom sits on the edge of the drawing the whole picture can shift by a few pixels.
    ``backend``: "auto", "fast" or "cairo", see the module docstring. Same arguments, same pixels.
    """
    if not isinstance(prepared_mol, Chem.Mol):
        raise TypeError(f"render expects a prepared RDKit Mol, got {type(prepared_mol).__name__}")
    if prepared_mol.GetNumConformers() == 0:
        raise ValueError("the molecule has no coordinates: pass it through prepare_for_drawing() or CoordinateCache.get()")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an integer of at least 16 pixels, got {size!r}")
    size = int(size)
    if style is None:
        style = DrawingStyle()
    elif not isinstance(style, DrawingStyle):
        raise TypeError(f"style must be a DrawingStyle or None, got {type(style).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")

    mol, black_dummies = prepared_mol, False
    if r_groups:
        labels = r_group_labels(prepared_mol)
        if labels:
            mol, black_dummies = _with_r_labels(prepared_mol, labels), True

    if backend == "auto":
        backend = "fast" if style.font_file is not None and fast_backend_available() else "cairo"
    if backend == "fast":
        lib = _cairo_library()
        if lib is None:
            raise RuntimeError(f"the fast drawing back end is not available here: {_CAIRO_STATE['reason']}")
        try:
            return _render_fast(lib, mol, size, style, black_dummies)
        except _Unsupported:
            _CAIRO_STATE["fallbacks"] += 1
    return _render_cairo(mol, size, style, black_dummies)


def _render_cairo(mol: Chem.Mol, size: int, style: DrawingStyle, black_dummies: bool) -> np.ndarray:
    drawer = rdMolDraw2D.MolDraw2DCairo(size, size)
    options = drawer.drawOptions()
    _apply_style(options, style, use_font_file=True)
    if black_dummies:
        options.updateAtomPalette({0: (0.0, 0.0, 0.0)})
    drawer.DrawMolecule(mol)
    drawer.FinishDrawing()
    picture = Image.open(io.BytesIO(drawer.GetDrawingText()))
    if picture.mode != "RGB":  # Cairo writes RGB for opaque drawings; be safe about anything else
        background = Image.new("RGB", picture.size, (255, 255, 255))
        background.paste(picture, mask=picture.getchannel("A") if "A" in picture.getbands() else None)
        picture = background
    return np.array(picture)


def atom_draw_coords(
    prepared_mol: Chem.Mol, size: int = 224, style: DrawingStyle | None = None, r_groups: bool = False
) -> np.ndarray:
    """Pixel (x, y) of every atom in the drawing :func:`render` makes with these arguments, shape (n_atoms, 2)."""
    style = style or DrawingStyle()
    mol = prepared_mol
    if r_groups:
        labels = r_group_labels(prepared_mol)
        if labels:
            mol = _with_r_labels(prepared_mol, labels)
    drawer = rdMolDraw2D.MolDraw2DSVG(size, size, -1, -1, True)
    _apply_style(drawer.drawOptions(), style, use_font_file=False)
    drawer.DrawMolecule(mol)
    return np.array([tuple(drawer.GetDrawCoords(i)) for i in range(mol.GetNumAtoms())], dtype=np.float64)


# ------------------------------------------------------------------------------------------- fast back end (ctypes)
class _Unsupported(Exception):
    """The SVG holds something the replay does not draw; the picture is drawn by RDKit's Cairo drawer instead."""


_CAIRO_STATE = {"loaded": False, "lib": None, "reason": "not loaded yet", "paths": None, "fallbacks": 0}
_CAIRO_LOCK = threading.Lock()


class _CairoPath(ctypes.Structure):
    _fields_ = [("status", ctypes.c_int), ("data", ctypes.c_void_p), ("num_data", ctypes.c_int)]


class _CairoMatrix(ctypes.Structure):
    _fields_ = [(name, ctypes.c_double) for name in ("xx", "yx", "xy", "yy", "x0", "y0")]


class _TextExtents(ctypes.Structure):
    _fields_ = [(name, ctypes.c_double) for name in ("x_bearing", "y_bearing", "width", "height", "x_advance", "y_advance")]


# cairo_glyph_t is {unsigned long index; double x; double y}; unsigned long is 32-bit on Windows.
_GLYPH_DTYPE = np.dtype(
    [("index", np.uint64 if ctypes.sizeof(ctypes.c_ulong) == 8 else np.uint32), ("x", np.float64), ("y", np.float64)],
    align=True,
)


def _library_candidates() -> list[tuple[str, str]]:
    """(libcairo, libfreetype) pairs to try: the copies bundled in RDKit's wheel first (RDKit itself draws with
    them, so they are known to work), then conda's and the system's. The FreeType must be the one Cairo links."""
    import rdkit

    here = os.path.dirname(os.path.abspath(rdkit.__file__))
    pairs = []
    for folder in (os.path.join(os.path.dirname(here), "rdkit.libs"), os.path.join(here, ".dylibs"), here):
        cairo = sorted(glob.glob(os.path.join(folder, "libcairo*.so*")) + glob.glob(os.path.join(folder, "libcairo*.dylib"))
                       + glob.glob(os.path.join(folder, "cairo*.dll")))
        freetype = sorted(glob.glob(os.path.join(folder, "libfreetype*.so*"))
                          + glob.glob(os.path.join(folder, "libfreetype*.dylib")) + glob.glob(os.path.join(folder, "freetype*.dll")))
        cairo = [c for c in cairo if "gobject" not in c and "script" not in c]
        if cairo and freetype:
            pairs.append((cairo[0], freetype[0]))
    prefix_lib = os.path.join(sys.prefix, "lib")
    for cairo, freetype in (("libcairo.so.2", "libfreetype.so.6"), ("libcairo.2.dylib", "libfreetype.6.dylib")):
        if os.path.isfile(os.path.join(prefix_lib, cairo)) and os.path.isfile(os.path.join(prefix_lib, freetype)):
            pairs.append((os.path.join(prefix_lib, cairo), os.path.join(prefix_lib, freetype)))
    cairo, freetype = ctypes.util.find_library("cairo"), ctypes.util.find_library("freetype")
    if cairo and freetype:
        pairs.append((cairo, freetype))
    return pairs


class _CairoLib:
    """ctypes bindings for the few Cairo and FreeType calls the replay needs."""

    def __init__(self, cairo_path: str, freetype_path: str):
        self.cairo = cairo = ctypes.CDLL(cairo_path)
        self.freetype = ft = ctypes.CDLL(freetype_path)
        vp, dbl, cint = ctypes.c_void_p, ctypes.c_double, ctypes.c_int

        def bind(lib, name, restype, *argtypes):
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = list(argtypes)
            return fn

        self.image_surface_create = bind(cairo, "cairo_image_surface_create", vp, cint, cint, cint)
        self.image_surface_get_data = bind(cairo, "cairo_image_surface_get_data", vp, vp)
        self.image_surface_get_stride = bind(cairo, "cairo_image_surface_get_stride", cint, vp)
        self.surface_flush = bind(cairo, "cairo_surface_flush", None, vp)
        self.surface_status = bind(cairo, "cairo_surface_status", cint, vp)
        self.create = bind(cairo, "cairo_create", vp, vp)
        self.status = bind(cairo, "cairo_status", cint, vp)
        self.set_source_rgba = bind(cairo, "cairo_set_source_rgba", None, vp, dbl, dbl, dbl, dbl)
        self.rectangle = bind(cairo, "cairo_rectangle", None, vp, dbl, dbl, dbl, dbl)
        self.new_path = bind(cairo, "cairo_new_path", None, vp)
        self.append_path = bind(cairo, "cairo_append_path", None, vp, ctypes.POINTER(_CairoPath))
        self.fill = bind(cairo, "cairo_fill", None, vp)
        self.fill_preserve = bind(cairo, "cairo_fill_preserve", None, vp)
        self.stroke = bind(cairo, "cairo_stroke", None, vp)
        self.set_line_width = bind(cairo, "cairo_set_line_width", None, vp, dbl)
        self.set_line_cap = bind(cairo, "cairo_set_line_cap", None, vp, cint)
        self.set_line_join = bind(cairo, "cairo_set_line_join", None, vp, cint)
        self.set_miter_limit = bind(cairo, "cairo_set_miter_limit", None, vp, dbl)
        self.set_fill_rule = bind(cairo, "cairo_set_fill_rule", None, vp, cint)
        self.set_dash = bind(cairo, "cairo_set_dash", None, vp, ctypes.POINTER(dbl), cint, dbl)
        self.set_font_face = bind(cairo, "cairo_set_font_face", None, vp, vp)
        self.set_font_size = bind(cairo, "cairo_set_font_size", None, vp, dbl)
        self.set_font_matrix = bind(cairo, "cairo_set_font_matrix", None, vp, ctypes.POINTER(_CairoMatrix))
        self.text_extents = bind(cairo, "cairo_text_extents", None, vp, ctypes.c_char_p, ctypes.POINTER(_TextExtents))
        self.set_antialias = bind(cairo, "cairo_set_antialias", None, vp, cint)
        self.show_glyphs = bind(cairo, "cairo_show_glyphs", None, vp, vp, cint)
        self.font_options_create = bind(cairo, "cairo_font_options_create", vp)
        self.font_options_set_hint_style = bind(cairo, "cairo_font_options_set_hint_style", None, vp, cint)
        self.font_options_set_hint_metrics = bind(cairo, "cairo_font_options_set_hint_metrics", None, vp, cint)
        self.font_options_set_antialias = bind(cairo, "cairo_font_options_set_antialias", None, vp, cint)
        self.set_font_options = bind(cairo, "cairo_set_font_options", None, vp, vp)
        self.ft_font_face_create = bind(cairo, "cairo_ft_font_face_create_for_ft_face", vp, vp, cint)
        self.font_face_status = bind(cairo, "cairo_font_face_status", cint, vp)
        self.ft_init = bind(ft, "FT_Init_FreeType", cint, ctypes.POINTER(vp))
        self.ft_new_face = bind(ft, "FT_New_Face", cint, vp, ctypes.c_char_p, ctypes.c_long, ctypes.POINTER(vp))
        self.ft_get_char_index = bind(ft, "FT_Get_Char_Index", ctypes.c_uint, vp, ctypes.c_ulong)


def _cairo_library() -> _CairoLib | None:
    """The bindings, loaded and smoke-tested on first use; None (with the reason recorded) where unavailable."""
    if _CAIRO_STATE["loaded"]:
        return _CAIRO_STATE["lib"]
    with _CAIRO_LOCK:
        if _CAIRO_STATE["loaded"]:
            return _CAIRO_STATE["lib"]
        reasons = []
        if os.environ.get("MOLECLIP_FAST_RENDER", "1").strip().lower() in ("0", "false", "no", "off"):
            reasons.append("switched off by MOLECLIP_FAST_RENDER")
        else:
            for cairo_path, freetype_path in _library_candidates():
                try:
                    lib = _CairoLib(cairo_path, freetype_path)
                    _ThreadState(lib).canvas(32)  # creating a surface proves the bindings work
                except (OSError, AttributeError, RuntimeError) as err:
                    reasons.append(f"{cairo_path}: {err}")
                    continue
                _CAIRO_STATE.update(lib=lib, reason="", paths=(cairo_path, freetype_path))
                break
            else:
                reasons.append("no Cairo + FreeType libraries found (RDKit's wheel bundles them in rdkit.libs)")
        if _CAIRO_STATE["lib"] is None:
            _CAIRO_STATE["reason"] = "; ".join(reasons)
        _CAIRO_STATE["loaded"] = True
        return _CAIRO_STATE["lib"]


def fast_backend_available() -> bool:
    """Whether :func:`render` can use the fast (PNG-free) back end in this process."""
    return _cairo_library() is not None


def fast_backend_info() -> dict:
    """Diagnostics: availability, why not, the libraries used, and how many drawings fell back to RDKit's Cairo."""
    lib = _cairo_library()
    return {
        "available": lib is not None,
        "reason": _CAIRO_STATE["reason"],
        "libraries": _CAIRO_STATE["paths"],
        "fallbacks": _CAIRO_STATE["fallbacks"],
    }


class _Canvas:
    """One RGB24 image surface and its context, reused for every drawing of one size in one thread."""

    def __init__(self, lib: _CairoLib, size: int):
        self.lib, self.size = lib, size
        self.surface = lib.image_surface_create(1, size, size)  # CAIRO_FORMAT_RGB24
        if not self.surface or lib.surface_status(self.surface) != 0:
            raise RuntimeError("cairo could not create an image surface")
        self.cr = lib.create(self.surface)
        if lib.status(self.cr) != 0:
            raise RuntimeError("cairo could not create a drawing context")
        options = lib.font_options_create()
        # Unhinted outlines, like RDKit's own FreeType drawing, so labels keep their shape at every size.
        lib.font_options_set_hint_style(options, 1)  # CAIRO_HINT_STYLE_NONE
        lib.font_options_set_hint_metrics(options, 1)  # CAIRO_HINT_METRICS_OFF
        lib.font_options_set_antialias(options, 2)  # CAIRO_ANTIALIAS_GRAY
        lib.set_font_options(self.cr, options)
        # Lines and wedges with Cairo's 4 x 4-sample rasteriser: half the cost of the default one, and at 224 px the
        # two differ only in the last bits of edge pixels (labels keep full greyscale antialiasing).
        lib.set_antialias(self.cr, 4)  # CAIRO_ANTIALIAS_FAST
        stride = lib.image_surface_get_stride(self.surface)
        buffer = (ctypes.c_uint8 * (stride * size)).from_address(lib.image_surface_get_data(self.surface))
        pixels = np.frombuffer(buffer, dtype=np.uint8).reshape(size, stride)[:, : size * 4].reshape(size, size, 4)
        self.bgrx = pixels


class _Font:
    """A FreeType face opened once per thread and font file, with its Cairo font face and glyph lookup."""

    def __init__(self, lib: _CairoLib, ft_library, path: str):
        face = ctypes.c_void_p()
        if lib.ft_new_face(ft_library, os.fsencode(path), 0, ctypes.byref(face)) != 0:
            raise _Unsupported(f"FreeType cannot open {path}")
        self.face = face  # kept alive for as long as Cairo may use it
        self.cairo_face = lib.ft_font_face_create(face, 0)
        if lib.font_face_status(self.cairo_face) != 0:
            raise _Unsupported(f"cairo cannot use {path}")
        self.glyphs: dict[str, int] = {}
        self._lookup = lib.ft_get_char_index
        self.scales: dict[str, float] = {}  # see char_scale()

    def glyph(self, char: str) -> int:
        index = self.glyphs.get(char)
        if index is None:
            index = self.glyphs[char] = int(self._lookup(self.face, ord(char)))
        return index

    def char_scale(self, lib: _CairoLib, cr, char: str) -> float:
        """Horizontal scale for ``char`` in RDKit's character slot.

        The replay places characters where RDKit's built-in metrics put them; those slots suit DejaVu Sans. A glyph
        relatively wider than DejaVu Sans' (bold and serif capitals, monospace 'r' and 'l') would touch its
        neighbours, so it is condensed to fit; narrower glyphs are left as they are. Computed once per character.
        """
        scale = self.scales.get(char)
        if scale is None:
            slot = _rdkit_advances().get(char)
            scale = 1.0
            if slot is not None:
                lib.set_font_face(cr, self.cairo_face)
                lib.set_font_size(cr, 1.0)
                extents = _TextExtents()
                lib.text_extents(cr, char.encode("utf-8"), ctypes.byref(extents))
                if extents.x_advance > 0:
                    scale = min(1.0, slot / extents.x_advance / _DEJAVU_SANS_SLOT_RATIO)
            self.scales[char] = scale
        return scale


# RDKit's character slot / the font's advance, median over _SLOT_CHARS, for DejaVu Sans: labels in that font sit
# comfortably in RDKit's slots, so glyphs are condensed only where this ratio is lower.
_DEJAVU_SANS_SLOT_RATIO = 0.78
_SLOT_CHARS = "ABCDEFGHIKLMNOPRSTUVWXYZabcdefghiklmnoprstuy0123456789+-()"


@lru_cache(maxsize=1)
def _rdkit_advances() -> dict[str, float]:
    """RDKit's non-FreeType character advances, in em, read off a probe drawing of one long atom label."""
    mol = Chem.RWMol(Chem.MolFromSmiles("C"))
    mol.GetAtomWithIdx(0).SetProp("atomLabel", _SLOT_CHARS + "X")
    rdDepictor.Compute2DCoords(mol)
    drawer = rdMolDraw2D.MolDraw2DSVG(2000, 300, -1, -1, True)
    options = drawer.drawOptions()
    options.prepareMolsBeforeDrawing = False
    options.minFontSize = options.maxFontSize = 40
    drawer.DrawMolecule(mol)
    drawer.FinishDrawing()
    texts = _SVG_TEXT.findall(drawer.GetDrawingText())
    if len(texts) != len(_SLOT_CHARS) + 1:
        return {}
    size = _style(texts[0][2])[8] or 40.0
    xs = [float(x) for x, _, _, _ in texts]
    return {char: (xs[i + 1] - xs[i]) / size for i, char in enumerate(_SLOT_CHARS) if xs[i + 1] > xs[i]}


class _ThreadState:
    def __init__(self, lib: _CairoLib):
        self.lib = lib
        self.canvases: dict[int, _Canvas] = {}
        self.fonts: dict[str, _Font] = {}
        self.ft_library = ctypes.c_void_p()
        if lib.ft_init(ctypes.byref(self.ft_library)) != 0:
            raise RuntimeError("FreeType could not be initialised")

    def canvas(self, size: int) -> _Canvas:
        canvas = self.canvases.get(size)
        if canvas is None:
            canvas = self.canvases[size] = _Canvas(self.lib, size)
        return canvas

    def font(self, path: str) -> _Font:
        font = self.fonts.get(path)
        if font is None:
            font = self.fonts[path] = _Font(self.lib, self.ft_library, path)
        return font


_THREAD = threading.local()


def _thread_state(lib: _CairoLib) -> _ThreadState:
    state = getattr(_THREAD, "state", None)
    if state is None or state.lib is not lib:
        state = _THREAD.state = _ThreadState(lib)
    return state


# RDKit's non-FreeType SVG for a molecule holds exactly these element shapes (one character per <text>); anything
# else makes the element count check below fail, and the picture is drawn by RDKit's Cairo drawer instead.
_SVG_PATH = re.compile(r"<path (?:class='[^']*' )?d='([^']*)' style='([^']*)' />")
_SVG_TEXT = re.compile(r"<text x='([^']*)' y='([^']*)' (?:class='[^']*' )?style='([^']*)' ?>([^<]*)</text>")
_SVG_RECT = re.compile(r"<rect style='([^']*)' width='([^']*)' height='([^']*)' x='([^']*)' y='([^']*)'> ?</rect>")
_HEADER_END = "<!-- END OF HEADER -->"
# RGB24 pixels are native-endian 32-bit 0x00RRGGBB words: byte offsets of R, G, B.
_RGB_FROM_CAIRO = (2, 1, 0) if sys.byteorder == "little" else (1, 2, 3)
_PATH_NUMBERS = str.maketrans({"M": " ", "L": " ", "Z": " ", ",": " "})
_PATH_OTHER_COMMAND = re.compile(r"[^MLZ0-9.,\s-]")
_MOVE, _LINE, _CLOSE = ord("M"), ord("L"), ord("Z")
_LINE_CAPS = {"butt": 0, "round": 1, "square": 2}
_LINE_JOINS = {"miter": 0, "round": 1, "bevel": 2}
_STYLES: dict[str, tuple] = {}


def _colour(value: str, opacity: str) -> tuple[float, float, float, float] | None:
    if value == "none":
        return None
    if len(value) != 7 or value[0] != "#":
        raise _Unsupported(f"colour {value!r}")
    return (int(value[1:3], 16) / 255.0, int(value[3:5], 16) / 255.0, int(value[5:7], 16) / 255.0, float(opacity))


def _style(text: str) -> tuple:
    """(fill, stroke, width, cap, join, miter, fill_rule, dashes, font_size) for an SVG style string, memoised: RDKit
    repeats a handful of style strings thousands of times."""
    parsed = _STYLES.get(text)
    if parsed is not None:
        return parsed
    try:
        kv = dict(part.split(":", 1) for part in text.split(";") if ":" in part)
        overall = float(kv.get("opacity", "1"))
        fill = _colour(kv.get("fill", "#000000"), kv.get("fill-opacity", "1"))
        stroke = _colour(kv.get("stroke", "none"), kv.get("stroke-opacity", "1"))
        if overall != 1.0:
            fill = fill and fill[:3] + (fill[3] * overall,)
            stroke = stroke and stroke[:3] + (stroke[3] * overall,)
        width = float(kv.get("stroke-width", "1").removesuffix("px"))
        cap = _LINE_CAPS[kv.get("stroke-linecap", "butt")]
        join = _LINE_JOINS[kv.get("stroke-linejoin", "miter")]
        miter = float(kv.get("stroke-miterlimit", "4"))
        fill_rule = 1 if kv.get("fill-rule", "nonzero") == "evenodd" else 0
        dashes = kv.get("stroke-dasharray", "none")
        dashes = None if dashes == "none" else tuple(float(v) for v in dashes.replace(",", " ").split())
        font_size = float(kv["font-size"].removesuffix("px")) if "font-size" in kv else None
        if "text-anchor" in kv and kv["text-anchor"] != "start":
            raise _Unsupported(f"text anchor {kv['text-anchor']!r}")
    except (KeyError, ValueError) as err:
        raise _Unsupported(f"style {text!r}: {err}") from err
    parsed = _STYLES[text] = (fill, stroke, width, cap, join, miter, fill_rule, dashes, font_size)
    return parsed


def _path_records(d_strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cairo path data (16-byte cairo_path_data_t records) for SVG paths made of M, L and Z commands, built in one
    vectorised pass over all paths; returns the records and the first record of every path (plus the end)."""
    joined = " ".join(d_strings)
    if _PATH_OTHER_COMMAND.search(joined):
        raise _Unsupported("path commands other than M, L and Z")
    raw = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    commands = raw[(raw == _MOVE) | (raw == _LINE) | (raw == _CLOSE)]
    points = np.fromstring(joined.translate(_PATH_NUMBERS), sep=" ")
    has_point = commands != _CLOSE
    n_points = int(has_point.sum())
    is_move = commands == _MOVE
    if points.size != 2 * n_points or int(is_move.sum()) != len(d_strings) or commands.size == 0 or not is_move[0]:
        raise _Unsupported("malformed path")
    n_rows_each = 1 + has_point
    first_row = np.cumsum(n_rows_each) - n_rows_each
    records = np.empty((int(n_rows_each.sum()), 2), dtype=np.float64)
    headers = records.view(np.int32).reshape(-1, 4)
    # cairo_path_data_t headers: type MOVE_TO 0, LINE_TO 1, CLOSE_PATH 3; length counts the header itself.
    headers[first_row, 0] = np.where(is_move, 0, np.where(has_point, 1, 3))
    headers[first_row, 1] = n_rows_each
    records[first_row[has_point] + 1] = points.reshape(n_points, 2)
    starts = np.append(first_row[is_move], records.shape[0])
    return records, starts


def _render_fast(lib: _CairoLib, mol: Chem.Mol, size: int, style: DrawingStyle, black_dummies: bool) -> np.ndarray:
    drawer = rdMolDraw2D.MolDraw2DSVG(size, size, -1, -1, True)  # noFreetype: one <text> per character
    options = drawer.drawOptions()
    _apply_style(options, style, use_font_file=False)
    if black_dummies:
        options.updateAtomPalette({0: (0.0, 0.0, 0.0)})
    drawer.DrawMolecule(mol)
    drawer.FinishDrawing()
    svg = drawer.GetDrawingText()
    start = svg.find(_HEADER_END)
    if start < 0:
        raise _Unsupported("unexpected SVG header")
    paths = _SVG_PATH.findall(svg, start)
    texts = _SVG_TEXT.findall(svg, start)
    rects = _SVG_RECT.findall(svg, start)
    # Every '<' after the header belongs to the header marker, a rect (+ its closing tag), a path, a text (+ its
    # closing tag) or the closing </svg>; if not, there is an element the replay does not know.
    if svg.count("<", start) != 2 + 2 * len(rects) + len(paths) + 2 * len(texts):
        raise _Unsupported("SVG elements other than rect, path and text")

    state = _thread_state(lib)
    canvas = state.canvas(size)
    font = state.font(style.font_file or _default_font_file())
    cr = canvas.cr

    # Group lines by style, and characters by style and condensing, each group in order of first appearance; RDKit
    # draws all bonds before the atom labels, and so does the replay. Each group is then one Cairo call instead of
    # one per line or character.
    path_groups: dict[str, list[str]] = {}
    for d, path_style in paths:
        members = path_groups.get(path_style)
        if members is None:
            path_groups[path_style] = [d]
        else:
            members.append(d)
    text_groups: dict[tuple[str, float], list[tuple[str, str, str]]] = {}
    scales = font.scales
    for x, y, text_style, char in texts:
        scale = scales.get(char)
        if scale is None:
            scale = font.char_scale(lib, cr, html.unescape(char) if "&" in char else char)
        key = (text_style, scale)
        members = text_groups.get(key)
        if members is None:
            text_groups[key] = [(x, y, char)]
        else:
            members.append((x, y, char))

    lib.new_path(cr)
    lib.set_source_rgba(cr, 1.0, 1.0, 1.0, 1.0)  # the canvas is reused; start from white whatever the SVG says
    lib.rectangle(cr, 0.0, 0.0, float(size), float(size))
    lib.fill(cr)
    for rect_style, width, height, rx, ry in rects:
        fill = _style(rect_style)[0]
        if fill is not None and fill[:3] != (1.0, 1.0, 1.0):
            lib.set_source_rgba(cr, *fill)
            lib.rectangle(cr, float(rx), float(ry), float(width), float(height))
            lib.fill(cr)

    if path_groups:
        records, starts = _path_records([d for members in path_groups.values() for d in members])
        starts = starts.tolist()
        base = records.ctypes.data
        path = _CairoPath(0, None, 0)
        path_ref = ctypes.byref(path)
        first = 0
        for style_text, members in path_groups.items():
            fill, stroke, line_width, cap, join, miter, fill_rule, dashes, _ = _style(style_text)
            last = first + len(members)
            if stroke is not None:
                lib.set_line_width(cr, line_width)
                lib.set_line_cap(cr, cap)
                lib.set_line_join(cr, join)
                lib.set_miter_limit(cr, miter)
                if dashes:
                    lib.set_dash(cr, (ctypes.c_double * len(dashes))(*dashes), len(dashes), 0.0)
            lib.set_fill_rule(cr, fill_rule)
            if fill is None:
                if stroke is not None:
                    # Open polylines of one style are stroked together: one call for all of a colour's bond lines.
                    path.data = base + starts[first] * 16
                    path.num_data = starts[last] - starts[first]
                    lib.append_path(cr, path_ref)
                    lib.set_source_rgba(cr, *stroke)
                    lib.stroke(cr)
            else:
                # Filled shapes (wedges, arrow heads) one by one, so overlapping ones never cancel under the fill rule.
                for k in range(first, last):
                    path.data = base + starts[k] * 16
                    path.num_data = starts[k + 1] - starts[k]
                    lib.append_path(cr, path_ref)
                    lib.set_source_rgba(cr, *fill)
                    if stroke is not None:
                        lib.fill_preserve(cr)
                        lib.set_source_rgba(cr, *stroke)
                        lib.stroke(cr)
                    else:
                        lib.fill(cr)
            if dashes:
                lib.set_dash(cr, None, 0, 0.0)
            first = last

    if text_groups:
        items = [item for members in text_groups.values() for item in members]
        chars = [html.unescape(c) if "&" in c else c for _, _, c in items]
        if any(len(c) != 1 for c in chars):
            raise _Unsupported("text element with more than one character")
        glyphs = np.empty(len(items), dtype=_GLYPH_DTYPE)
        lookup = font.glyphs
        glyphs["index"] = [lookup[c] if c in lookup else font.glyph(c) for c in chars]
        glyphs["x"] = np.array([x for x, _, _ in items], dtype=np.float64)
        glyphs["y"] = np.array([y for _, y, _ in items], dtype=np.float64)
        base = glyphs.ctypes.data
        lib.set_font_face(cr, font.cairo_face)
        matrix = _CairoMatrix(1.0, 0.0, 0.0, 1.0, 0.0, 0.0)
        first = 0
        for (style_text, x_scale), members in text_groups.items():
            parsed = _style(style_text)
            fill, font_size = parsed[0], parsed[8]
            if fill is not None and font_size is not None:
                lib.set_source_rgba(cr, *fill)
                matrix.xx, matrix.yy = font_size * x_scale, font_size
                lib.set_font_matrix(cr, ctypes.byref(matrix))
                lib.show_glyphs(cr, base + first * _GLYPH_DTYPE.itemsize, len(members))
            first += len(members)

    lib.surface_flush(canvas.surface)
    if lib.status(cr) != 0:
        # A Cairo error sticks to the context; start the next drawing on a fresh one.
        status = lib.status(cr)
        state.canvases.pop(size, None)
        raise _Unsupported(f"cairo error {status}")
    # One channel at a time into a fresh HxWx3 array: several times faster than copying a channel-reversed view
    # (and fancy indexing would give a channel-major layout that slows every later step).
    out = np.empty((size, size, 3), dtype=np.uint8)
    for channel, offset in enumerate(_RGB_FROM_CAIRO):
        out[:, :, channel] = canvas.bgrx[:, :, offset]
    return out


@lru_cache(maxsize=1)
def _default_font_file() -> str:
    """RDKit's own default label font, for fast drawings of styles that name none."""
    path = os.path.join(RDConfig.RDDataDir, "Fonts", "Telex-Regular.ttf")
    if os.path.isfile(path):
        return path
    return find_fonts()[0]
