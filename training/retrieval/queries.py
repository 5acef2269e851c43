"""The queries of a vector search (training/retrieval/index.py): SMILES and pictures of molecules, turned into vectors
exactly as the model sees molecules.

* :class:`Query`: one query as the user gave it (a SMILES or a picture file's path) and where it was given.
* :func:`read_picture`: a picture from any program (a PNG/JPEG... drawing, a figure cropped from a paper) made RGB on
  white and square, as the processor's drawings are.
* :func:`embed_queries`: SMILES drawn by the processor, pictures through the processor's picture path, in one call,
  the one `moleclip embed` makes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from moleclip.processing.molecules import shorten

from moleclip.training.inference.engine import embed

from moleclip.training.kinds import ImageKind

__all__ = ["PICTURE_SUFFIXES", "Query", "embed_queries", "is_picture", "read_picture"]

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# PIL modes with 8 bits a channel; 16-bit and float pictures have no agreed white and are refused.
_PICTURE_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")


@dataclass(frozen=True)
class Query:
    """One query as the user gave it: `text` (a SMILES or a picture's path), `kind` ("smiles" or "picture"),
    `origin` (where it was given, for messages: "--query 2", "line 5 of queries.csv")."""

    text: str
    kind: str
    origin: str = ""


def is_picture(text: str) -> bool:
    """Whether a query names a picture file (by its suffix) rather than being a SMILES."""
    return str(text).strip().lower().endswith(PICTURE_SUFFIXES)


def read_picture(path: str | os.PathLike):
    """A picture of a molecule as the processor's picture path should get it: a PIL RGB image, square.

    Transparency is composited onto white (as drawings are: black on white), the EXIF orientation of a photographed
    page is applied, and a non-square picture is centred on a white square rather than stretched, since drawings are
    square with the molecule centred; the processor then resizes it to its size. Raises FileNotFoundError, OSError
    (not a picture PIL can read) or ValueError (16-bit or floating-point pixels, an absurd size).
    """
    path = Path(os.fspath(path)).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"picture not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"expected a picture file, got a folder: {path}")
    try:
        with Image.open(path) as opened:
            opened.load()
            picture = ImageOps.exif_transpose(opened)
    except Image.DecompressionBombError as err:
        raise ValueError(f"{path}: the picture is too large to be a drawing of a molecule ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:  # PIL's errors for a file it cannot decode
        raise OSError(f"cannot read picture {path}: {err}") from None
    if picture.mode not in _PICTURE_MODES:
        raise ValueError(f"{path}: pictures must have 8 bits a channel, got mode {picture.mode!r}; save it as an "
                         "8-bit PNG or JPEG")
    rgba = picture.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    width, height = rgb.size
    if width == height:
        return rgb
    side = max(width, height)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(rgb, ((side - width) // 2, (side - height) // 2))
    return square


def embed_queries(model, processor, queries: Sequence[Query], batch_size: int = 64, device=None,
                  progress: bool = False, r_groups: bool = False) -> np.ndarray:
    """Embeddings (len(queries), dimension) of SMILES and picture queries, in their order.

    SMILES are drawn by `processor` as `moleclip embed` draws them (pass the same `r_groups`); pictures are read
    with :func:`read_picture` and go through the same processor call, which resizes them and applies its channel
    order and normalisation. Every query must be usable: the first SMILES that cannot be drawn or picture that cannot
    be read is an error naming its origin.
    """
    if not queries:
        raise ValueError("no queries given")
    items = []
    for query in queries:
        if query.kind == "picture":
            try:
                items.append(read_picture(query.text))
            except (OSError, ValueError) as err:
                if not query.origin:
                    raise
                raise type(err)(f"{query.origin}: {err}") from None
        elif query.kind == "smiles":
            items.append(query.text)
        else:
            raise ValueError(f"unknown query kind {query.kind!r}")
    # The processor draws SMILES and reads pictures in one list (the image kind passes them on as they are), so both
    # reach the model through the engine `moleclip embed` runs.
    extra = {"r_groups": True} if r_groups else {}
    vectors, kept, skipped = embed(ImageKind(model, processor), items, batch_size=batch_size, device=device,
                                   progress=progress, on_error="skip", **extra)
    if skipped:
        first = skipped[0]
        where = queries[first.index].origin or f"query {first.index + 1}"
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        raise ValueError(f"{where}: SMILES {shorten(queries[first.index].text)!r} {first.reason}{more}")
    return vectors
