"""Drawing molecules as 224 x 224 RGB pictures with RDKit, plain or in a randomised style, fast.

Two steps, split so the expensive one runs once per molecule:

* :func:`prepare_for_drawing` (or :class:`CoordinateCache`) computes 2D coordinates, kekulizes and wedges bonds
  (RDKit's ``PrepareMolForDrawing``, ~10 ms for a ChEMBL molecule);
* :func:`render` draws a prepared molecule in a :class:`DrawingStyle` without recomputing anything.

Three drawing back ends, picked by ``render(..., backend=...)`` (the image processor's ``drawing_backend`` setting,
saved with it, so a checkpoint draws the same pixels wherever it is loaded):

``"cairo"``
    RDKit's ``MolDraw2DCairo`` for every picture, exactly as RDKit draws it. The price is a PNG round trip: Cairo's
    drawer only hands its pixels out as a zlib-compressed PNG, and compressing and decoding it costs more than the
    drawing itself.
``"fast"``
    the ctypes replay of :mod:`cairo_replay` for every picture: RDKit lays the molecule out (``MolDraw2DSVG``, the
    same layout code) and the replay draws it into an in-memory Cairo surface, no PNG. Labels are placed with RDKit's
    built-in character metrics, so they can sit a few pixels from where ``"cairo"`` puts them. About twice as fast.
``"hybrid"`` (default)
    ``"cairo"`` for styles that name no font file (RDKit's default style: the plain pictures, exactly RDKit's) and
    ``"fast"`` for styles that do (all of :func:`random_style`'s, where label placement is one more random variation).
    The choice depends only on the style.

A back end that cannot run here (the replay's Cairo/FreeType libraries do not load, or ``MOLECLIP_FAST_RENDER=0``
switched the replay off) raises :class:`DrawingBackendError` saying so; no drawing silently changes rasteriser. The
one exception is per picture and deterministic: a drawing whose SVG holds an element the replay does not know (RDKit
emits only lines, polygons and characters for molecules, so this is rare and depends only on the molecule and style)
is drawn by RDKit's Cairo drawer instead, and counted in :func:`fast_backend_info`.

Only flat relative imports: this file travels as Hugging Face remote code next to the image processor.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from rdkit import Chem, RDConfig
from rdkit.Chem.Draw import rdMolDraw2D

from .cairo_replay import (
    BackendUnavailableError,
    Unsupported,
    fast_backend_available,
    fast_backend_info,
    note_fallback,
    replay,
)
from .fonts import FONT_NAMES, font_dirs, locate_font
from .molecules import InvalidMoleculeError, quiet_rdkit, to_mol
from .standardize import standardize_mol

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "DrawingBackendError",
    "FONT_NAMES",
    "R_GROUP_ELEMENTS",
    "CoordinateCache",
    "DrawingStyle",
    "FontNotFoundError",
    "atom_draw_coords",
    "check_backend",
    "drawn_atom_coords",
    "fast_backend_info",
    "fast_backend_available",
    "find_fonts",
    "prepare_for_drawing",
    "r_group_labels",
    "random_style",
    "render",
]

BACKENDS = ("hybrid", "cairo", "fast")
DEFAULT_BACKEND = "hybrid"  # today's pixels: RDKit's Cairo for plain drawings, the replay for random styles

# R1..R8 in the paper's order.
R_GROUP_ELEMENTS = ("C", "O", "N", "S", "F", "Cl", "Br", "I")
_R_INDEX = {symbol: i + 1 for i, symbol in enumerate(R_GROUP_ELEMENTS)}


class FontNotFoundError(RuntimeError):
    """None of the TrueType fonts for randomised drawing could be found or used by RDKit."""


class DrawingBackendError(RuntimeError):
    """The chosen drawing back end cannot run in this process; the message says why and what to do."""


# ------------------------------------------------------------------------------------------------------------ fonts
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
    dirs = font_dirs()
    located = [p for p in (locate_font(name, dirs) for name in FONT_NAMES) if p is not None]
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
    coordinates are kept; 3D ones, and ones that put every atom on one point, are replaced by a 2D layout. Raises
    :class:`InvalidMoleculeError` if RDKit cannot lay the molecule out.
    """
    if not isinstance(mol, Chem.Mol):
        raise TypeError(f"prepare_for_drawing expects an RDKit Mol, got {type(mol).__name__}")
    if mol.GetNumAtoms() == 0:
        raise InvalidMoleculeError("", None, "has no atoms")
    conformer = mol.GetConformer() if mol.GetNumConformers() > 0 else None
    # A conformer whose atoms all sit on one point is no layout (an SD file written without coordinates holds all
    # zeros); keeping it would draw every atom on top of the others.
    collapsed = (conformer is not None and mol.GetNumAtoms() > 1
                 and float(np.ptp(conformer.GetPositions(), axis=0).max()) < 1e-4)
    force_2d = conformer is not None and (conformer.Is3D() or collapsed)
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


# Resident memory of one prepared molecule per atom or bond (hydrogens included), measured by
# `benchmarks/coordinate_cache.py`: 587 bytes for ChEMBL's first 800 drawable molecules, 582 for its 800 largest; the
# estimate errs on the safe side.
BYTES_PER_ATOM_OR_BOND = 640
# The memory a cache may hold by default: a bound on the estimate above, whatever the molecules' sizes.
DEFAULT_CACHE_MIB = 1024


def estimated_bytes(prepared: Chem.Mol) -> int:
    """The resident memory a prepared molecule costs, estimated from its atoms and bonds (hydrogens included)."""
    return BYTES_PER_ATOM_OR_BOND * (prepared.GetNumAtoms() + prepared.GetNumBonds())


class CoordinateCache:
    """Least-recently-used cache of prepared molecules, keyed by SMILES string (or by the Mol object itself).

    ``get`` parses with :func:`~molecules.to_mol` (bad SMILES raise :class:`InvalidMoleculeError` naming the entry),
    prepares with :func:`prepare_for_drawing`, and keeps at most ``max_size`` molecules and at most ``max_mib`` MiB of
    them, whichever comes first. Memory is estimated from each molecule's atoms and bonds (`estimated_bytes`, measured
    by `benchmarks/coordinate_cache.py`: about 68 KiB for a typical ChEMBL molecule, 136 KiB for a large one), so
    10,000 typical molecules take about 0.65 GiB and the default budget of 1 GiB holds whatever the molecules' sizes.
    Mol keys hold a reference to the Mol, so its ``id`` cannot be reused while cached.
    Thread-safe. Pickling keeps the limits but not the contents (each DataLoader worker fills its own).
    """

    def __init__(self, max_size: int = 10_000, max_mib: float = DEFAULT_CACHE_MIB):
        if int(max_size) < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size}")
        if not max_mib > 0:
            raise ValueError(f"max_mib must be positive, got {max_mib}")
        self.max_size = int(max_size)
        self.max_mib = float(max_mib)
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0  # estimated memory of the cached molecules
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _key(item):
        if isinstance(item, str):
            return item.strip()
        if isinstance(item, Chem.Mol):
            return ("mol", id(item))
        return None

    def get(self, item, index: int | None = None, standardize: str = "none") -> Chem.Mol:
        """The prepared molecule for a SMILES string or Mol; ``index`` is the position reported in errors;
        `standardize` is applied first (see :mod:`standardize`; it is part of the key)."""
        key = self._key(item)
        if key is not None and standardize != "none":
            key = (standardize, key)
        if key is not None:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return entry[1]
        mol = to_mol(item, index)  # the drawing limit applies: this molecule is about to be drawn
        mol = standardize_mol(mol, standardize, index)
        try:
            prepared = prepare_for_drawing(mol)
        except InvalidMoleculeError as err:
            smiles = item.strip() if isinstance(item, str) else err.smiles
            raise InvalidMoleculeError(smiles, index, err.reason) from err
        cost = estimated_bytes(prepared)
        with self._lock:
            self.misses += 1
            if key in self._entries:  # another thread prepared it meanwhile
                self.bytes -= self._entries[key][2]
            self._entries[key] = (item, prepared, cost)
            self._entries.move_to_end(key)
            self.bytes += cost
            budget = self.max_mib * 2**20
            # the newest entry always stays, even alone over budget: the caller is about to draw it
            while len(self._entries) > 1 and (len(self._entries) > self.max_size or self.bytes > budget):
                _, (_, _, freed) = self._entries.popitem(last=False)
                self.bytes -= freed
        return prepared

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, item) -> bool:
        return self._key(item) in self._entries

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = self.hits = self.misses = 0

    def __getstate__(self):
        return {"max_size": self.max_size, "max_mib": self.max_mib}

    def __setstate__(self, state):
        self.__init__(state["max_size"], state.get("max_mib", DEFAULT_CACHE_MIB))

    def __repr__(self) -> str:
        return (f"CoordinateCache(max_size={self.max_size}, max_mib={self.max_mib:g}, size={len(self)}, "
                f"mib={self.bytes / 2**20:.1f}, hits={self.hits}, misses={self.misses})")


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
    backend: str = DEFAULT_BACKEND,
) -> np.ndarray:
    """Draw a prepared molecule: uint8 array (size, size, 3), RGB, white background.

    ``prepared_mol`` comes from :func:`prepare_for_drawing` or :meth:`CoordinateCache.get`; its coordinates are used
    as they are. ``style`` defaults to RDKit's plain drawing. ``r_groups=True`` draws terminal C/O/N/S/F/Cl/Br/I
    atoms as black R1..R8 labels at their positions (see :func:`r_group_labels`); RDKit fits the drawing to the new
    labels, so where a replaced atom sits on the edge of the drawing the whole picture can shift by a few pixels.
    ``backend``: "hybrid" (default), "cairo" or "fast", see the module docstring; :class:`DrawingBackendError` if it
    cannot run here. Same arguments, same pixels.
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
    check_backend(backend)

    mol, black_dummies = _with_r_groups(prepared_mol, r_groups)
    if _draws_with_replay(backend, style):
        try:
            return _render_fast(mol, size, style, black_dummies)
        except BackendUnavailableError as err:
            raise DrawingBackendError(_unavailable_message(backend, str(err))) from None
        except Unsupported:
            note_fallback()
    return _render_cairo(mol, size, style, black_dummies)


def check_backend(backend: str) -> None:
    """Refuse a drawing back end that is not one of :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown drawing backend {backend!r}; choose one of {list(BACKENDS)} (see moleclip.processing."
                         "rendering: 'cairo' is RDKit's MolDraw2DCairo, 'fast' the ctypes replay, 'hybrid' the first "
                         "for plain drawings and the second for random styles)")


def _unavailable_message(backend: str, reason: str) -> str:
    which = "draws every picture" if backend == "fast" else "draws randomly styled pictures (randomize_drawing)"
    return (
        f"drawing_backend={backend!r} {which} with the fast Cairo replay, which cannot run here: {reason}. "
        "Set drawing_backend='cairo' (the image processor's setting, or render(..., backend='cairo')) to draw with "
        "RDKit's MolDraw2DCairo instead; its label placement differs by a few pixels, so pictures will not match ones "
        "drawn with the replay."
    )


def _draw(drawer, mol: Chem.Mol, style: DrawingStyle, black_dummies: bool, use_font_file: bool):
    """Let an RDKit drawer draw `mol` in `style` (R-group dummies in black); returns what it drew."""
    options = drawer.drawOptions()
    _apply_style(options, style, use_font_file=use_font_file)
    if black_dummies:
        options.updateAtomPalette({0: (0.0, 0.0, 0.0)})
    drawer.DrawMolecule(mol)
    drawer.FinishDrawing()
    return drawer.GetDrawingText()


def _render_fast(mol: Chem.Mol, size: int, style: DrawingStyle, black_dummies: bool) -> np.ndarray:
    if not fast_backend_available():  # checked first: the SVG layout below is wasted work otherwise
        raise BackendUnavailableError(fast_backend_info()["reason"])
    drawer = rdMolDraw2D.MolDraw2DSVG(size, size, -1, -1, True)  # noFreetype: one <text> per character
    svg = _draw(drawer, mol, style, black_dummies, use_font_file=False)
    return replay(svg, size, style.font_file or _default_font_file())


def _render_cairo(mol: Chem.Mol, size: int, style: DrawingStyle, black_dummies: bool) -> np.ndarray:
    png = _draw(rdMolDraw2D.MolDraw2DCairo(size, size), mol, style, black_dummies, use_font_file=True)
    picture = Image.open(io.BytesIO(png))
    if picture.mode != "RGB":  # Cairo writes RGB for opaque drawings; be safe about anything else
        background = Image.new("RGB", picture.size, (255, 255, 255))
        background.paste(picture, mask=picture.getchannel("A") if "A" in picture.getbands() else None)
        picture = background
    return np.array(picture)


def _with_r_groups(prepared_mol: Chem.Mol, r_groups: bool) -> tuple[Chem.Mol, bool]:
    """The molecule to draw, with its R-group labels when asked for and it has any, and whether it now has them."""
    labels = r_group_labels(prepared_mol) if r_groups else {}
    return (_with_r_labels(prepared_mol, labels), True) if labels else (prepared_mol, False)


def _draws_with_replay(backend: str, style: DrawingStyle) -> bool:
    """Whether `backend` draws this style with the ctypes Cairo replay (else with RDKit's own Cairo drawer)."""
    return backend == "fast" or (backend == "hybrid" and style.font_file is not None)


def _coords(drawer, prepared_mol: Chem.Mol, style: DrawingStyle, r_groups: bool, use_font_file: bool) -> np.ndarray:
    mol, _ = _with_r_groups(prepared_mol, r_groups)
    _apply_style(drawer.drawOptions(), style, use_font_file=use_font_file)
    drawer.DrawMolecule(mol)
    return np.array([tuple(drawer.GetDrawCoords(i)) for i in range(mol.GetNumAtoms())], dtype=np.float64)


def atom_draw_coords(
    prepared_mol: Chem.Mol, size: int = 224, style: DrawingStyle | None = None, r_groups: bool = False
) -> np.ndarray:
    """Pixel (x, y) of every atom in the drawing :func:`render` makes with these arguments, shape (n_atoms, 2)."""
    drawer = rdMolDraw2D.MolDraw2DSVG(size, size, -1, -1, True)
    return _coords(drawer, prepared_mol, style or DrawingStyle(), r_groups, use_font_file=False)


def drawn_atom_coords(
    prepared_mol: Chem.Mol,
    size: int = 224,
    style: DrawingStyle | None = None,
    r_groups: bool = False,
    backend: str = DEFAULT_BACKEND,
) -> np.ndarray:
    """Pixel (x, y) of every atom, shape (n_atoms, 2), from the drawer that :func:`render` uses for ``backend``.

    :func:`atom_draw_coords` asks RDKit's SVG drawer, which lays the molecule out exactly as the ``"fast"`` replay draws
    it. RDKit's Cairo drawer (``"cairo"``, and ``"hybrid"`` for styles without a font file) measures labels with
    FreeType and so scales and places the drawing slightly differently (up to ~3 px at 224 px); this asks that drawer
    instead, so the coordinates belong to the very pixels ``render(..., backend=backend)`` returns. Used to pool pixel
    attributions onto atoms (``moleclip explain``).
    """
    style = style or DrawingStyle()
    check_backend(backend)
    if _draws_with_replay(backend, style):
        return atom_draw_coords(prepared_mol, size, style, r_groups)
    drawer = rdMolDraw2D.MolDraw2DCairo(int(size), int(size))
    # as _render_cairo: the font file decides the layout
    return _coords(drawer, prepared_mol, style, r_groups, use_font_file=True)


@lru_cache(maxsize=1)
def _default_font_file() -> str:
    """RDKit's own default label font, for fast drawings of styles that name none."""
    path = os.path.join(RDConfig.RDDataDir, "Fonts", "Telex-Regular.ttf")
    if os.path.isfile(path):
        return path
    return find_fonts()[0]
