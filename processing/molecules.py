"""Turning user input (SMILES strings or RDKit molecules) into RDKit molecules, with errors that say what went wrong.

Every part of the package that reads molecules goes through :func:`to_mol`, so bad input is reported the same way
everywhere: the offending SMILES, its position in the batch, and RDKit's reason.

This module uses only flat relative imports (none, here) so that it can travel as Hugging Face remote code.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rdkit import Chem, rdBase

# Molecules above this many heavy atoms are refused before drawing: RDKit can spend minutes laying out a protein-sized
# SMILES, and a 224 px picture of it carries no readable structure anyway.
MAX_HEAVY_ATOMS = 250
# Strings longer than this are refused before RDKit sees them: parsing a 1 MB string takes seconds and hundreds of MB
# only to be refused by the heavy-atom limit afterwards. 250 heavy atoms written with brackets, stereo, charges and
# ring closures stay far below it.
MAX_SMILES_LENGTH = 10_000


def shorten(smiles: str, limit: int = 80) -> str:
    """A SMILES cut for messages: a 2,000-character peptide should not flood a terminal."""
    return smiles if len(smiles) <= limit else f"{smiles[: limit - 20]}...{smiles[-17:]} ({len(smiles)} chars)"


class InvalidMoleculeError(ValueError):
    """A SMILES string (or molecule) that cannot be used, with its position in the input and the reason."""

    def __init__(self, smiles: str, index: int | None = None, reason: str = "could not be parsed"):
        self.smiles = smiles
        self.index = index
        self.reason = reason
        where = f" at position {index}" if index is not None else ""
        super().__init__(f"Invalid molecule{where}: {shorten(smiles)!r} {reason}")


@dataclass(frozen=True)
class SkippedMolecule:
    """One entry left out of a batch, reported back to the caller instead of vanishing."""

    index: int
    smiles: str
    reason: str


@contextlib.contextmanager
def quiet_rdkit():
    """Silence RDKit's own stderr chatter; our exceptions carry the message instead. RDKit's logging is left as the
    caller had it afterwards (a log the user switched off stays off)."""
    block = rdBase.BlockLogs()
    try:
        yield
    finally:
        del block  # BlockLogs restores the earlier state when it goes


def _rdkit_reason(smiles: str) -> str:
    """RDKit's explanation for a parse failure (it only logs it), captured from its error log without touching where
    the user's RDKit logs go."""
    capture = getattr(rdBase, "CaptureErrorLog", None)  # RDKit 2025.09 and later
    if capture is not None:
        with capture() as log:
            Chem.MolFromSmiles(smiles)
        text = log.messages
    else:  # older RDKit: send the log to Python's stderr for the call, then back to RDKit's own streams
        import io

        stream = io.StringIO()
        with contextlib.redirect_stderr(stream):
            rdBase.LogToPythonStderr()
            Chem.MolFromSmiles(smiles)
        rdBase.LogToCppStreams()
        text = stream.getvalue()
    # RDKit prefixes each log line with a "[hh:mm:ss]" timestamp; keep only the message.
    lines = [re.sub(r"^\[[0-9:]+\]\s*", "", line.split("SMILES Parse Error:", 1)[-1].strip())
             for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "could not be parsed"


def _refuse_text(smiles: str, index: int | None) -> None:
    """Refuse text that RDKit would read as something other than the one SMILES it looks like.

    RDKit takes whatever follows a space, tab or newline as the molecule's name (so "CCO CCN" would be ethanol), stops
    at a NUL byte, and skips characters it does not know ("CCÖ" would be ethane): none of these may pass silently.
    """
    for position, char in enumerate(smiles):
        if char.isspace():
            raise InvalidMoleculeError(smiles, index, f"holds whitespace at character {position + 1}: one SMILES per entry "
                                       "(RDKit would read only the part before it and take the rest as a name)")
        if not char.isprintable() or ord(char) > 127:
            raise InvalidMoleculeError(smiles, index, f"holds the character {char!r} at character {position + 1}, which "
                                       "is not part of SMILES")


def to_mol(item, index: int | None = None, max_heavy_atoms: int | None = MAX_HEAVY_ATOMS) -> Chem.Mol:
    """Return an RDKit molecule for a SMILES string or molecule, or raise :class:`InvalidMoleculeError`.

    Anything that is not one SMILES is refused with the reason: an empty entry, a missing value (None, NaN), a number
    or bytes, whitespace or control characters inside the string, characters outside SMILES' ASCII alphabet, a string
    over `MAX_SMILES_LENGTH` characters, query features (SMARTS such as `[#6]~[#7]`), or more heavy atoms than
    `max_heavy_atoms` (the drawing limit; None where nothing is drawn, as for fingerprints). Leading and trailing
    whitespace is removed first (a table cell " CCO" is CCO).
    """
    if isinstance(item, Chem.Mol):
        mol = item
        smiles = Chem.MolToSmiles(mol) if mol.GetNumAtoms() else ""
    elif isinstance(item, str):
        smiles = item.strip()
        if not smiles:
            raise InvalidMoleculeError(item, index, "is empty")
        if len(smiles) > MAX_SMILES_LENGTH:
            raise InvalidMoleculeError(smiles, index, f"is {len(smiles):,} characters long, more than the "
                                       f"{MAX_SMILES_LENGTH:,} this package reads")
        _refuse_text(smiles, index)
        with quiet_rdkit():
            mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raise InvalidMoleculeError(smiles, index, f"could not be parsed ({_rdkit_reason(smiles)})")
    else:
        # Missing cells (None, NaN), numbers and bytes: a bad entry like any other, so `on_error="skip"` skips it.
        raise InvalidMoleculeError(repr(item), index, f"is not a SMILES string (a {type(item).__name__})")
    if mol.GetNumAtoms() == 0:
        raise InvalidMoleculeError(smiles, index, "has no atoms")
    if mol.HasQuery():
        raise InvalidMoleculeError(smiles, index, "has query features (a SMARTS pattern, not one molecule)")
    if max_heavy_atoms is not None and mol.GetNumHeavyAtoms() > max_heavy_atoms:
        raise InvalidMoleculeError(
            smiles, index, f"has {mol.GetNumHeavyAtoms()} heavy atoms, more than the {max_heavy_atoms} this package draws"
        )
    return mol


def parse_many(
    items: Iterable, on_error: str = "raise", max_heavy_atoms: int | None = MAX_HEAVY_ATOMS
) -> tuple[list[Chem.Mol], list[int], list[SkippedMolecule]]:
    """Parse a batch. Returns (molecules, indices of the kept inputs, skipped entries).

    ``on_error="raise"`` stops at the first bad entry with an error naming it; ``on_error="skip"`` leaves bad entries
    out and reports each one in the third return value, so nothing is dropped silently.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    mols, kept, skipped = [], [], []
    for i, item in enumerate(items):
        try:
            mols.append(to_mol(item, index=i, max_heavy_atoms=max_heavy_atoms))
            kept.append(i)
        except InvalidMoleculeError as err:
            if on_error == "raise":
                raise
            skipped.append(SkippedMolecule(i, err.smiles, err.reason))
    return mols, kept, skipped


def warn_about_fragments(smiles: Sequence, where: str) -> int:
    """Warn, with a count, when entries hold several fragments (salts, solvents, mixtures); returns the count.

    Every fragment is drawn and fingerprinted, so a salt and its parent get different predictions (nicotine and
    nicotine oxalate differ by 0.14 log units): whether that is right depends on the property, so say it.
    """
    import warnings

    count = sum(1 for s in smiles if isinstance(s, str) and "." in s)  # "." only ever separates fragments in SMILES
    if count:
        warnings.warn(f"{where}: {count} of {len(smiles)} molecules hold several fragments (salts, solvents, "
                      "mixtures); every fragment is drawn and counted. If the property belongs to the parent "
                      "compound, finetune with --standardize parent (its largest organic fragment, neutralised)",
                      UserWarning, stacklevel=2)
    return count


def list_skipped(skipped: Sequence[SkippedMolecule], limit: int = 5, line_of=None) -> str:
    """The first `limit` skipped entries as "#position 'SMILES' (reason); ..." (or "line N ..." with `line_of`, which
    maps a position to its line in the input file), and how many more."""
    where = (lambda s: f"line {line_of(s.index)}") if line_of is not None else (lambda s: f"#{s.index}")
    shown = "; ".join(f"{where(s)} {shorten(s.smiles)!r} ({s.reason})" for s in skipped[:limit])
    return shown + (f" and {len(skipped) - limit} more" if len(skipped) > limit else "")


def describe_skipped(skipped: Sequence[SkippedMolecule], limit: int = 5) -> str:
    """One readable line about skipped entries, for warnings and CLI output."""
    if not skipped:
        return "no molecules skipped"
    return f"{len(skipped)} molecule(s) skipped: {list_skipped(skipped, limit)}"
