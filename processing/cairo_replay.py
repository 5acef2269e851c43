"""The "fast" drawing back end: RDKit's SVG drawing commands replayed into an in-memory Cairo surface via ctypes.

RDKit lays a molecule out with ``MolDraw2DSVG`` (the same layout code as its Cairo drawer, here without FreeType so
every character is its own ``<text>``); :func:`replay` draws those lines, polygons and characters with the Cairo and
FreeType libraries that ship inside RDKit's wheel (or conda's, or the system's) and reads the pixels straight from the
surface: no PNG compression and decoding, about twice as fast as ``MolDraw2DCairo`` for randomly styled drawings.

Lines are rasterised by the same library with the same widths, caps and joins (with Cairo's 4 x 4-sample
antialiasing, which changes only edge pixels' last bits). Atom labels are drawn with the chosen TrueType font but
placed with RDKit's built-in character metrics, so label spacing can differ from RDKit's FreeType drawing by a few
pixels, and glyphs wider than those metrics allow (bold faces) are condensed to fit.

An SVG holding anything else (RDKit emits only lines, polygons and characters for molecules) raises
:class:`Unsupported`; :func:`~rendering.render` then draws that picture with RDKit's Cairo drawer. Whether that
happens depends only on the molecule and style, never on the machine, and :func:`fast_backend_info` counts it.

Thread-safe: each thread gets its own Cairo surface and font faces; so are DataLoader worker processes. Setting
``MOLECLIP_FAST_RENDER=0`` switches the replay off (drawing with it then fails, saying so).

Only flat relative imports: this file travels as Hugging Face remote code next to the image processor.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import html
import os
import re
import sys
import threading
from functools import lru_cache

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdDepictor
from rdkit.Chem.Draw import rdMolDraw2D

__all__ = [
    "BackendUnavailableError",
    "Unsupported",
    "cairo_library",
    "fast_backend_available",
    "fast_backend_info",
    "note_fallback",
    "replay",
]

class Unsupported(Exception):
    """The SVG holds something the replay does not draw; the caller draws that picture with RDKit's Cairo drawer."""


class BackendUnavailableError(RuntimeError):
    """The replay's Cairo and FreeType libraries cannot be used in this process (the message says why)."""


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


def cairo_library() -> _CairoLib | None:
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


def note_fallback() -> None:
    """Count one picture drawn by RDKit's Cairo drawer because its SVG was :class:`Unsupported` (diagnostics)."""
    _CAIRO_STATE["fallbacks"] += 1


def fast_backend_available() -> bool:
    """Whether :func:`render` can use the fast (PNG-free) back end in this process."""
    return cairo_library() is not None


def fast_backend_info() -> dict:
    """Diagnostics: availability, why not, the libraries used, and how many drawings fell back to RDKit's Cairo."""
    lib = cairo_library()
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
            raise Unsupported(f"FreeType cannot open {path}")
        self.face = face  # kept alive for as long as Cairo may use it
        self.cairo_face = lib.ft_font_face_create(face, 0)
        if lib.font_face_status(self.cairo_face) != 0:
            raise Unsupported(f"cairo cannot use {path}")
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
        raise Unsupported(f"colour {value!r}")
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
            raise Unsupported(f"text anchor {kv['text-anchor']!r}")
    except (KeyError, ValueError) as err:
        raise Unsupported(f"style {text!r}: {err}") from err
    parsed = _STYLES[text] = (fill, stroke, width, cap, join, miter, fill_rule, dashes, font_size)
    return parsed


def _path_records(d_strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cairo path data (16-byte cairo_path_data_t records) for SVG paths made of M, L and Z commands, built in one
    vectorised pass over all paths; returns the records and the first record of every path (plus the end)."""
    joined = " ".join(d_strings)
    if _PATH_OTHER_COMMAND.search(joined):
        raise Unsupported("path commands other than M, L and Z")
    raw = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    commands = raw[(raw == _MOVE) | (raw == _LINE) | (raw == _CLOSE)]
    points = np.fromstring(joined.translate(_PATH_NUMBERS), sep=" ")
    has_point = commands != _CLOSE
    n_points = int(has_point.sum())
    is_move = commands == _MOVE
    if points.size != 2 * n_points or int(is_move.sum()) != len(d_strings) or commands.size == 0 or not is_move[0]:
        raise Unsupported("malformed path")
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


def replay(svg: str, size: int, font_file: str) -> np.ndarray:
    """Draw RDKit's non-FreeType SVG of a molecule (``MolDraw2DSVG(size, size, -1, -1, True)``) into a uint8
    (size, size, 3) RGB array, labels in ``font_file``.

    Raises :class:`BackendUnavailableError` when the libraries cannot be used here, and :class:`Unsupported` when
    the SVG holds something the replay does not draw (the caller then draws the picture with RDKit's Cairo drawer).
    """
    lib = cairo_library()
    if lib is None:
        raise BackendUnavailableError(_CAIRO_STATE["reason"])
    start = svg.find(_HEADER_END)
    if start < 0:
        raise Unsupported("unexpected SVG header")
    paths = _SVG_PATH.findall(svg, start)
    texts = _SVG_TEXT.findall(svg, start)
    rects = _SVG_RECT.findall(svg, start)
    # Every '<' after the header belongs to the header marker, a rect (+ its closing tag), a path, a text (+ its
    # closing tag) or the closing </svg>; if not, there is an element the replay does not know.
    if svg.count("<", start) != 2 + 2 * len(rects) + len(paths) + 2 * len(texts):
        raise Unsupported("SVG elements other than rect, path and text")

    state = _thread_state(lib)
    canvas = state.canvas(size)
    font = state.font(font_file)
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
            raise Unsupported("text element with more than one character")
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
        raise Unsupported(f"cairo error {status}")
    # One channel at a time into a fresh HxWx3 array: several times faster than copying a channel-reversed view
    # (and fancy indexing would give a channel-major layout that slows every later step).
    out = np.empty((size, size, 3), dtype=np.uint8)
    for channel, offset in enumerate(_RGB_FROM_CAIRO):
        out[:, :, channel] = canvas.bgrx[:, :, offset]
    return out
