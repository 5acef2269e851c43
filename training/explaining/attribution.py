"""The maths of `moleclip explain`: attributions on a drawing, pooled onto the atoms that were drawn there.

Pixel methods (MoleCLIP models), each giving a map the size of the drawing:

* :func:`integrated_gradients` (Sundararajan et al. 2017, through captum): the path integral of the gradient from a
  blank white drawing to the molecule's drawing. White is the baseline because it is "the same canvas with no
  molecule on it": background pixels equal the baseline and get exactly zero, so all attribution sits on ink, and by
  completeness the map sums to f(drawing) - f(blank) (up to the reported convergence delta), in the model's output
  units (the target's units for regression, the logit for classification).
* :func:`attention_rollout` (Abnar & Zuidema 2020): per layer, the attention averaged over heads, plus the identity
  (the residual stream), rows renormalised; the layers multiplied together; the [CLS] row read off over the patches.
  It says where the pooled token gathers information from, for any target alike (it does not depend on the head).
  :func:`patch_map_to_pixels` spreads each patch's share evenly over its pixels so it pools like a pixel map.

Pooling (:func:`assign_pixels`, :func:`pool`), from where RDKit drew each atom (``drawn_atom_coords``, the drawer the
processor's back end uses) and the bonds between them, never from the pixels themselves:

* a pixel within ``ATOM_ZONE`` bond lengths of an atom position belongs to the nearest such atom (its label, and the
  first part of each of its bonds);
* else, a pixel within ``BOND_ZONE`` bond lengths of a bond (the segment between its two atom positions; double-bond
  lines and wedges lie inside that band) is split evenly between the bond's two atoms (the nearest bond wins);
* any other pixel is assigned to nobody; the share of attribution that reached atoms is reported as the coverage.

The bond length is the median drawn length of the molecule's bonds. An explicitly drawn hydrogen (RDKit draws one
on each stereocentre that has one) counts for the heavy atom it is bonded to: the tables have one row per heavy atom.

Fingerprint models (:func:`fingerprint_atom_scores`): each on-bit is switched off in turn (occlusion, one batched
forward pass); the change in output is that bit's contribution, split evenly between the Morgan environments that set
the bit, and each environment's share evenly between its atoms (RDKit's bit info).

:func:`enrichment` scores a set of explanations against atoms known to cause the target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator

from moleclip.processing.rendering import drawn_atom_coords

__all__ = [
    "ATOM_ZONE",
    "BOND_ZONE",
    "DrawingGeometry",
    "PixelAssignment",
    "assign_pixels",
    "attention_rollout",
    "cls_patch_shares",
    "drawing_geometry",
    "enrichment",
    "fingerprint_atom_scores",
    "integrated_gradients",
    "morgan_environments",
    "patch_map_to_pixels",
    "pool",
    "require_captum",
]

# In units of the molecule's median drawn bond length. RDKit draws labels at 0.6 bond lengths high (its baseFontSize),
# so 0.4 holds a one- or two-letter label around its atom; 0.5 holds a bond's offset second line (0.15) and wedges.
ATOM_ZONE = 0.4
BOND_ZONE = 0.5


# ------------------------------------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class DrawingGeometry:
    """Where a molecule was drawn, in pixels, and which table row each drawn atom counts for.

    Attributes:
        atom_xy: (n_drawn, 2) x (right), y (down) of every drawn atom, including hydrogens the drawing added.
        bonds: (n_bonds, 2) drawn-atom indices of each bond.
        owner: (n_drawn,) the row (heavy atom) each drawn atom counts for; -1 for none (a lone hydrogen).
        n_rows: number of heavy atoms (rows).
        size: the drawing's side in pixels.
    """

    atom_xy: np.ndarray
    bonds: np.ndarray
    owner: np.ndarray
    n_rows: int
    size: int

    @property
    def bond_length(self) -> float:
        """The median drawn bond length in pixels (half the picture for a molecule without bonds: its atoms own it all)."""
        if len(self.bonds):
            lengths = np.linalg.norm(self.atom_xy[self.bonds[:, 0]] - self.atom_xy[self.bonds[:, 1]], axis=1)
            if np.median(lengths) > 0:
                return float(np.median(lengths))
        return self.size / 2.0


def heavy_atoms(mol: Chem.Mol) -> list[int]:
    """Indices of the atoms that get a row: every atom but hydrogen."""
    return [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() != 1]


def owners(mol: Chem.Mol) -> tuple[np.ndarray, int]:
    """(row of each atom of `mol`, number of rows): heavy atoms by their order, hydrogens their heavy neighbour's row."""
    heavy = heavy_atoms(mol)
    row_of = {idx: row for row, idx in enumerate(heavy)}
    owner = np.full(mol.GetNumAtoms(), -1, dtype=np.int64)
    for atom in mol.GetAtoms():
        if atom.GetIdx() in row_of:
            owner[atom.GetIdx()] = row_of[atom.GetIdx()]
        else:
            for neighbour in atom.GetNeighbors():
                if neighbour.GetIdx() in row_of:
                    owner[atom.GetIdx()] = row_of[neighbour.GetIdx()]
                    break
    return owner, len(heavy)


def drawing_geometry(prepared_mol: Chem.Mol, size: int, style=None, r_groups: bool = False,
                     backend: str = "hybrid") -> DrawingGeometry:
    """The geometry of the drawing ``render(prepared_mol, size, style, r_groups, backend)`` makes."""
    xy = drawn_atom_coords(prepared_mol, size, style, r_groups, backend)
    bonds = np.array([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in prepared_mol.GetBonds()],
                     dtype=np.int64).reshape(-1, 2)
    owner, n_rows = owners(prepared_mol)
    return DrawingGeometry(xy, bonds, owner, n_rows, int(size))


# -------------------------------------------------------------------------------------------------------- pooling
@dataclass(frozen=True)
class PixelAssignment:
    """Which row each pixel's attribution goes to: parallel arrays, a pixel split between two rows appears twice.

    ``pixels`` are flat indices into the (size, size) map, ``rows`` heavy-atom rows, ``weights`` the share (1 or 0.5).
    """

    pixels: np.ndarray
    rows: np.ndarray
    weights: np.ndarray
    n_rows: int
    size: int


def _segment_distances(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """(n_points, n_segments) distance of each point to each segment."""
    direction = end - start  # (S, 2)
    length2 = np.maximum((direction ** 2).sum(axis=1), 1e-12)
    rel = points[:, None, :] - start[None, :, :]  # (P, S, 2)
    t = np.clip((rel * direction[None]).sum(axis=2) / length2[None], 0.0, 1.0)
    nearest = start[None] + t[..., None] * direction[None]
    return np.linalg.norm(points[:, None, :] - nearest, axis=2)


def assign_pixels(geometry: DrawingGeometry, atom_zone: float = ATOM_ZONE, bond_zone: float = BOND_ZONE,
                  chunk: int = 8192) -> PixelAssignment:
    """The pooling rule of the module docstring, computed once per drawing (then :func:`pool` any number of maps)."""
    size, xy = geometry.size, geometry.atom_xy
    length = geometry.bond_length
    atom_radius, bond_radius = atom_zone * length, bond_zone * length
    # Only pixels near some atom or bond can be assigned: a bounding box around the skeleton saves most of the work.
    low = np.floor(xy.min(axis=0) - bond_radius - 1).clip(0, size).astype(int)
    high = np.ceil(xy.max(axis=0) + bond_radius + 1).clip(0, size).astype(int)
    cols, rows_ = np.meshgrid(np.arange(low[0], high[0]), np.arange(low[1], high[1]))
    flat = (rows_ * size + cols).reshape(-1)
    centres = np.stack([cols.reshape(-1) + 0.5, rows_.reshape(-1) + 0.5], axis=1)  # pixel (r, c) covers [c, c+1)
    out_pixels, out_rows, out_weights = [], [], []
    bonds = [b for b in geometry.bonds if geometry.owner[b[0]] >= 0 or geometry.owner[b[1]] >= 0]
    bonds = np.array(bonds, dtype=np.int64).reshape(-1, 2)
    for start in range(0, len(flat), chunk):
        points, pixels = centres[start:start + chunk], flat[start:start + chunk]
        atom_d = np.linalg.norm(points[:, None, :] - xy[None], axis=2)
        nearest = atom_d.argmin(axis=1)
        in_atom = atom_d[np.arange(len(points)), nearest] <= atom_radius
        owner = geometry.owner[nearest]
        keep = in_atom & (owner >= 0)
        out_pixels.append(pixels[keep])
        out_rows.append(owner[keep])
        out_weights.append(np.ones(int(keep.sum())))
        if not len(bonds):
            continue
        rest = ~in_atom
        bond_d = _segment_distances(points[rest], xy[bonds[:, 0]], xy[bonds[:, 1]])
        which = bond_d.argmin(axis=1)
        near = bond_d[np.arange(len(which)), which] <= bond_radius
        for end in (0, 1):
            row = geometry.owner[bonds[which[near], end]]
            ok = row >= 0
            out_pixels.append(pixels[rest][near][ok])
            out_rows.append(row[ok])
            out_weights.append(np.full(int(ok.sum()), 0.5))
    return PixelAssignment(np.concatenate(out_pixels).astype(np.int64), np.concatenate(out_rows).astype(np.int64),
                           np.concatenate(out_weights), geometry.n_rows, size)


def pool(pixel_map: np.ndarray, assignment: PixelAssignment) -> tuple[np.ndarray, float]:
    """(score of each heavy atom, coverage): the map's values summed per row by the assignment, and the share of the
    map's absolute mass that reached an atom (1.0 for an all-zero map)."""
    values = np.asarray(pixel_map, dtype=np.float64)
    if values.shape != (assignment.size, assignment.size):
        raise ValueError(f"a {values.shape} map for a {assignment.size} x {assignment.size} drawing")
    flat = values.reshape(-1)
    taken = flat[assignment.pixels] * assignment.weights
    scores = np.bincount(assignment.rows, weights=taken, minlength=assignment.n_rows)
    total = np.abs(flat).sum()
    coverage = float(np.abs(taken).sum() / total) if total > 0 else 1.0
    return scores, coverage


# --------------------------------------------------------------------------------------------- pixel attributions
def require_captum():
    """captum's IntegratedGradients, or an ImportError that says how to install it."""
    try:
        # captum is an optional extra (moleclip[explain])
        from captum.attr import IntegratedGradients
    except ImportError as err:
        raise ImportError(f'integrated gradients need captum ({err}); install it with pip install "moleclip[explain]"'
                          ) from None
    return IntegratedGradients


def integrated_gradients(forward: Callable[[torch.Tensor], torch.Tensor], pixel_values: torch.Tensor,
                         baseline: torch.Tensor, steps: int = 50,
                         internal_batch_size: int | None = None) -> tuple[np.ndarray, float]:
    """(attribution map (H, W) summed over channels, convergence delta) of one drawing.

    ``forward`` maps pixel values (batch, C, H, W) to one output per picture (batch,); ``pixel_values`` and
    ``baseline`` are (1, C, H, W), normalised as the model takes them. The delta is sum(map) - (f(x) - f(baseline)):
    how far the Riemann sum is from completeness (more ``steps`` make it smaller).
    """
    IntegratedGradients = require_captum()
    if steps < 2:
        raise ValueError(f"integrated gradients need at least 2 steps, got {steps}")
    attributions, delta = IntegratedGradients(forward).attribute(
        pixel_values, baselines=baseline, n_steps=int(steps), internal_batch_size=internal_batch_size,
        return_convergence_delta=True)
    return attributions[0].sum(dim=0).detach().cpu().double().numpy(), float(delta.reshape(-1)[0])


def attention_rollout(attentions: Sequence) -> np.ndarray:
    """Rolled-out attention (tokens, tokens) of one picture from per-layer attentions (heads, tokens, tokens), first
    layer first: average heads, add the identity, renormalise rows, multiply through the layers."""
    if not len(attentions):
        raise ValueError("no attention maps: the model did not return any (is its attention implementation 'eager'?)")
    rollout = None
    for layer in attentions:
        a = layer.detach().double().cpu().numpy() if isinstance(layer, torch.Tensor) else np.asarray(layer, np.float64)
        if a.ndim != 3 or a.shape[1] != a.shape[2]:
            raise ValueError(f"expected (heads, tokens, tokens) attention, got shape {a.shape}")
        a = a.mean(axis=0) + np.eye(a.shape[1])
        a = a / a.sum(axis=1, keepdims=True)
        rollout = a if rollout is None else a @ rollout  # later layers read what earlier layers gathered
    return rollout


def cls_patch_shares(rollout: np.ndarray, grid: int) -> np.ndarray:
    """The [CLS] row (token 0) of a rollout over the patches (tokens 1..grid^2), as a (grid, grid) map."""
    if rollout.shape[0] != grid * grid + 1:
        raise ValueError(f"{rollout.shape[0]} tokens for a {grid} x {grid} patch grid (+1 [CLS])")
    return rollout[0, 1:].reshape(grid, grid)


def patch_map_to_pixels(patch_map: np.ndarray, patch_size: int) -> np.ndarray:
    """Each patch's value spread evenly over its patch_size^2 pixels: the map keeps its total."""
    return np.kron(np.asarray(patch_map, np.float64), np.ones((patch_size, patch_size))) / patch_size ** 2


# -------------------------------------------------------------------------------------------------- fingerprints
def morgan_environments(mol: Chem.Mol, radius: int, n_bits: int) -> tuple[np.ndarray, dict[int, list[tuple[int, ...]]]]:
    """(Morgan bits as `morgan_fingerprints` computes them, {bit: [atoms of each environment that sets it]})."""
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=int(radius), fpSize=int(n_bits))
    info = rdFingerprintGenerator.AdditionalOutput()
    info.AllocateBitInfoMap()
    bits = generator.GetFingerprintAsNumPy(mol, additionalOutput=info).astype(np.float32)
    environments: dict[int, list[tuple[int, ...]]] = {}
    for bit, occurrences in info.GetBitInfoMap().items():
        envs = []
        for centre, r in occurrences:
            atoms = {centre}
            if r > 0:
                for bond in Chem.FindAtomEnvironmentOfRadiusN(mol, int(r), int(centre)):
                    b = mol.GetBondWithIdx(bond)
                    atoms.update((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))
            envs.append(tuple(sorted(atoms)))
        environments[int(bit)] = envs
    return bits, environments


def spread_bits(bit_scores: dict[int, float], environments: dict[int, list[tuple[int, ...]]], mol: Chem.Mol
                ) -> np.ndarray:
    """Per heavy-atom row: each bit's score split evenly over its environments, each share evenly over their atoms."""
    owner, n_rows = owners(mol)
    scores = np.zeros(n_rows)
    for bit, score in bit_scores.items():
        envs = environments[bit]
        for atoms in envs:
            for atom in atoms:
                if owner[atom] >= 0:
                    scores[owner[atom]] += score / len(envs) / len(atoms)
    return scores


@torch.no_grad()
def fingerprint_atom_scores(model, mol: Chem.Mol, target_index: int) -> tuple[np.ndarray, float, np.ndarray]:
    """(score of each heavy atom, the model's output for the target, bits) for a FingerprintPredictor.

    A bit's score is output(all bits) - output(that bit off): what the model loses without it, in the output's units
    (the target's for regression, the logit for classification).
    """
    bits, environments = morgan_environments(mol, model.settings["radius"], model.settings["in_features"])
    on = np.flatnonzero(bits)
    batch = np.repeat(bits[None], len(on) + 1, axis=0)
    batch[np.arange(1, len(on) + 1), on] = 0.0  # row 0 intact, row k without the k-th on-bit
    device = next(model.parameters()).device
    outputs = model(features=torch.as_tensor(batch, device=device)).logits[:, target_index].double().cpu().numpy()
    bit_scores = {int(bit): float(outputs[0] - outputs[k + 1]) for k, bit in enumerate(on)}
    return spread_bits(bit_scores, environments, mol), float(outputs[0]), bits


# ---------------------------------------------------------------------------------------------------- verification
def enrichment(scores: Sequence[np.ndarray], causal: Sequence[np.ndarray]) -> dict:
    """How much attribution falls on known causal atoms, over molecules with some causal and some other atoms.

    For each molecule: share = sum |score| on causal atoms / sum |score|, base = causal atoms / atoms. Returns the mean
    share, the mean base, their ratio (enrichment: 1 = no better than spreading evenly), the median per-molecule
    ratio, the fraction of molecules whose top-scoring atom is causal and its chance value (the mean base), the mean
    per-molecule ROC-AUC of |score| for telling causal atoms from the others (0.5: chance; ties count half), and the
    number of molecules used.
    """
    # scipy.stats is not loaded by `import moleclip`; only this check needs it
    from scipy.stats import rankdata

    shares, bases, ratios, hits, aucs = [], [], [], [], []
    for s, c in zip(scores, causal):
        s, c = np.abs(np.asarray(s, np.float64)), np.asarray(c, bool)
        if len(s) != len(c):
            raise ValueError(f"{len(s)} scores for {len(c)} atoms")
        if not c.any() or c.all() or s.sum() <= 0:
            continue
        share, base = s[c].sum() / s.sum(), c.mean()
        shares.append(share)
        bases.append(base)
        ratios.append(share / base)
        hits.append(bool(c[int(s.argmax())]))
        ranks, positives = rankdata(s), int(c.sum())  # Mann-Whitney: the AUC from the causal atoms' rank sum
        aucs.append((ranks[c].sum() - positives * (positives + 1) / 2) / (positives * (len(c) - positives)))
    if not shares:
        return {"molecules": 0, "share": float("nan"), "base": float("nan"), "enrichment": float("nan"),
                "median_enrichment": float("nan"), "top_atom_causal": float("nan"), "top_atom_chance": float("nan"),
                "auroc": float("nan")}
    return {"molecules": len(shares), "share": float(np.mean(shares)), "base": float(np.mean(bases)),
            "enrichment": float(np.mean(shares) / np.mean(bases)), "median_enrichment": float(np.median(ratios)),
            "top_atom_causal": float(np.mean(hits)), "top_atom_chance": float(np.mean(bases)),
            "auroc": float(np.mean(aucs))}
