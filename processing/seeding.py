"""Per-sample random generators: one spelling for every random choice that must not depend on the process.

A picture's augmentation, a drawing's random style or a frozen embedding's augmented view is drawn from a generator
that is a pure function of named integer coordinates (run seed, epoch, molecule, ...). The same coordinates give the
same numbers in any process, DataLoader worker or resumed run; that is what makes resume bit-exact.

Only flat relative imports (none needed): this file may travel as Hugging Face remote code.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sample_rng"]


def sample_rng(*coordinates: int) -> np.random.Generator:
    """A generator seeded by non-negative integer coordinates, e.g. ``sample_rng(seed, epoch, row)``."""
    if not coordinates:
        raise ValueError("sample_rng needs at least one coordinate")
    values = [int(c) for c in coordinates]
    if any(v < 0 for v in values):
        raise ValueError(f"per-sample seeding takes non-negative integers, got {tuple(coordinates)}")
    return np.random.default_rng(values)
