"""Why did a model predict that? Per-atom explanations of MoleCLIP and fingerprint models (`moleclip explain`).

A MoleCLIP model is explained on the very drawing it sees: the processor that comes with it draws the molecule (same
size, back end, R-group setting) and turns it into pixel values (channel order, mean and std), and the pixel
attributions (integrated gradients, attention rollout; see :mod:`moleclip.training.attribution`) are pooled onto the
atoms through the drawer's own atom positions. Before anything is attributed, the molecule is drawn a second time
from the prepared molecule the geometry is read from, and the two drawings must be identical. A model that
standardises its input (the processor's or fingerprint model's `standardize` setting) is explained on the standardised
molecule, whose atoms are then the rows.

A fingerprint model (`FingerprintPredictor`) is explained through its Morgan bits (occlusion of each on-bit, spread
over the atoms of the bit's environments), into the same table and the same kind of picture, so the two views of a
molecule can be set side by side.

Library use::

    explainer = make_explainer(load_kind("runs/esol/model"), target="log_solubility")   # training.kinds
    explanation = explainer.explain("Clc1ccccc1Cl")
    explanation.scores["integrated_gradients"]   # one score per heavy atom
    atom_picture(explanation).save("atoms.png"); heatmap_picture(explanation).save("pixels.png")
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw
from rdkit import Chem

from moleclip.processing.molecules import to_mol
from moleclip.tasks import is_classification
from moleclip.training.attribution import (
    assign_pixels,
    attention_rollout,
    cls_patch_shares,
    drawing_geometry,
    fingerprint_atom_scores,
    heavy_atoms,
    integrated_gradients,
    patch_map_to_pixels,
    pool,
    require_captum,
)

__all__ = [
    "FINGERPRINT_METHODS",
    "IMAGE_METHODS",
    "FingerprintExplainer",
    "ImageExplainer",
    "MoleculeExplanation",
    "atom_picture",
    "heatmap_picture",
    "make_explainer",
    "resolve_target",
]

IMAGE_METHODS = ("integrated_gradients", "attention_rollout")
FINGERPRINT_METHODS = ("fingerprint_occlusion",)
# each method in a few words, for captions (the app's atom maps)
METHOD_WORDS = {"integrated_gradients": "integrated gradients on the drawing", "attention_rollout": "attention rollout",
                "fingerprint_occlusion": "Morgan-bit occlusion"}


@dataclass
class MoleculeExplanation:
    """One molecule's explanation.

    Attributes:
        smiles: as given.
        mol: the parsed molecule; its heavy atoms, in index order, are the rows of every score array.
        atom_indices, elements: RDKit atom index and element symbol of each row.
        scores: method -> one score per row (see each method for its units).
        output: the model output that was explained (regression: the prediction; classification: the logit).
        prediction: the explained model's prediction (the value, or the probability), as `moleclip predict
            --no-uncertainty` reports it (by default predict reports the mean of the folder's ensemble).
        coverage: pixel method -> share of the map's absolute mass that was pooled onto atoms.
        delta: integrated gradients' convergence delta, when computed: sum of the map minus the change it explains.
        picture: the RGB drawing the model saw (None for fingerprint models).
        pixel_maps: pixel method -> (H, W) map over `picture`.
        coords: (rows, 2) 2D layout coordinates of the heavy atoms, for pictures.
        standardized: the SMILES of the molecule explained when the model standardises its input (its atoms, numbered
            as this SMILES writes them, are the rows and `mol`), else None.
    """

    smiles: str
    mol: Chem.Mol
    atom_indices: list[int]
    elements: list[str]
    scores: dict[str, np.ndarray]
    output: float
    prediction: float
    coverage: dict[str, float] = field(default_factory=dict)
    delta: float | None = None
    picture: np.ndarray | None = None
    pixel_maps: dict[str, np.ndarray] = field(default_factory=dict)
    coords: np.ndarray | None = None
    standardized: str | None = None

    @property
    def relative_delta(self) -> float | None:
        """|delta| as a share of the change integrated gradients explains (output on the drawing minus output on a
        blank canvas); above ~0.1 the path integral has not converged and more steps are needed."""
        if self.delta is None:
            return None
        change = float(self.pixel_maps["integrated_gradients"].sum()) - self.delta
        return abs(self.delta) / abs(change) if change != 0 else (0.0 if self.delta == 0 else float("inf"))


# ------------------------------------------------------------------------------------------------------ targets
def resolve_target(names: Sequence[str], requested: str | None) -> int:
    """The index of target `requested`; with None, the only target, or an error listing them."""
    names = list(names)
    if requested is None:
        if len(names) == 1:
            return 0
        raise ValueError(f"the model predicts {len(names)} targets ({', '.join(names)}); choose one with --target")
    if requested not in names:
        raise ValueError(f"the model has no target {requested!r}; its targets are {', '.join(names)}")
    return names.index(requested)


def _task(model) -> str:
    return model.config.task if hasattr(model, "config") else model.task


def _prediction(task: str, output: float) -> float:
    return float(1.0 / (1.0 + np.exp(-output))) if is_classification(task) else float(output)


def _rows(mol: Chem.Mol) -> tuple[list[int], list[str]]:
    heavy = heavy_atoms(mol)
    if not heavy:
        from moleclip.processing.molecules import InvalidMoleculeError

        raise InvalidMoleculeError(Chem.MolToSmiles(mol), None, "has no heavy atoms to explain")
    return heavy, [mol.GetAtomWithIdx(i).GetSymbol() for i in heavy]


def _prepared_input(smiles: str, index: int | None, method: str) -> tuple[Chem.Mol, str | None]:
    """The molecule the model sees, parsed by the package's strict parser and standardised as the model's training
    molecules were (`method`, the processor's or fingerprint model's `standardize` setting), and its SMILES when
    standardisation applies."""
    mol = to_mol(smiles, index)
    if method in (None, "none"):
        return mol, None
    from moleclip.processing.standardize import standardize_mol

    mol = standardize_mol(mol, method, index)
    return mol, Chem.MolToSmiles(mol)


def _numbered_as_written(explanation: MoleculeExplanation) -> MoleculeExplanation:
    """The explanation of a standardised molecule with its atoms numbered as `standardized` writes them.

    The standardiser numbers the parent's atoms its own way (counter-ions gone, the rest in input order), but the user
    sees that molecule only as `standardized`, a canonical SMILES that writes the atoms in another order: rows and
    atom indices follow that SMILES, so that atom_index k is atom k of ``Chem.MolFromSmiles(standardized)``."""
    if explanation.standardized is None:
        return explanation
    mol = explanation.mol
    if Chem.MolToSmiles(mol) != explanation.standardized:
        raise RuntimeError(f"{explanation.smiles!r}: the standardised molecule no longer writes as "
                           f"{explanation.standardized!r}")
    written = [int(i) for i in mol.GetPropsAsDict(includePrivate=True, includeComputed=True)["_smilesAtomOutputOrder"]]
    position = {atom: k for k, atom in enumerate(written)}
    rows = np.argsort([position[atom] for atom in explanation.atom_indices], kind="stable")
    explanation.mol = Chem.RenumberAtoms(mol, written)
    explanation.atom_indices = [position[explanation.atom_indices[r]] for r in rows]
    explanation.elements = [explanation.elements[r] for r in rows]
    explanation.scores = {method: np.asarray(values)[rows] for method, values in explanation.scores.items()}
    if explanation.coords is not None:
        explanation.coords = explanation.coords[rows]
    return explanation


def _layout(prepared: Chem.Mol, heavy: list[int]) -> np.ndarray:
    conformer = prepared.GetConformer()
    return np.array([[conformer.GetAtomPosition(i).x, conformer.GetAtomPosition(i).y] for i in heavy])


# --------------------------------------------------------------------------------------------------- explainers
class ImageExplainer:
    """Explains a MoleCLIPForPropertyPrediction on its processor's drawings. See the module docstring."""

    def __init__(self, model, processor, target_index: int = 0, methods: Sequence[str] = IMAGE_METHODS,
                 steps: int = 50, internal_batch_size: int = 16, device=None):
        unknown = sorted(set(methods) - set(IMAGE_METHODS))
        if unknown or not methods:
            raise ValueError(f"unknown method(s) {unknown or methods} for a MoleCLIP model; choose from "
                             f"{', '.join(IMAGE_METHODS)}")
        if processor.randomize_drawing or processor.augmentation != "none":
            raise ValueError(f"the model's processor draws at random (randomize_drawing={processor.randomize_drawing}, "
                             f"augmentation={processor.augmentation!r}), so no single drawing is what the model sees; "
                             "save the processor with randomize_drawing=False and augmentation='none'")
        if "integrated_gradients" in methods:
            require_captum()  # before any work
        if steps < 2:
            raise ValueError(f"--steps must be at least 2, got {steps}")
        if internal_batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {internal_batch_size}")
        self.model, self.processor = model, processor
        self.target_index, self.methods = int(target_index), tuple(methods)
        self.steps, self.internal_batch_size = int(steps), int(internal_batch_size)
        self.task = _task(model)
        from moleclip.training.devices import choose_device

        self.model = model.to(choose_device(device)).eval()
        self.device = next(self.model.parameters()).device
        self.dtype = next(self.model.parameters()).dtype
        if "attention_rollout" in self.methods:
            # sdpa and flash attention do not return attention weights; eager computes the same outputs and does.
            self.model.set_attn_implementation("eager")
        vision = self.model.config.vision_config
        self.patch_size = int(vision.patch_size)
        self.size = int(processor.size["height"])
        if self.size != int(vision.image_size):
            raise ValueError(f"the processor draws {self.size} px pictures, the model takes {vision.image_size} px")
        blank = np.full((self.size, self.size, 3), 255, dtype=np.uint8)
        # a canvas with no molecule, normalised exactly as a drawing is
        self.baseline = self._pixels(blank)

    def _pixels(self, picture: np.ndarray) -> torch.Tensor:
        values = self.processor.pictures_to_pixel_values([picture], return_tensors="pt")
        return values.to(device=self.device, dtype=self.dtype)

    def _output(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits[:, self.target_index]

    def explain(self, smiles: str, index: int | None = None) -> MoleculeExplanation:
        from moleclip.processing.rendering import DrawingStyle, prepare_for_drawing, render

        mol, standardized = _prepared_input(smiles, index, getattr(self.processor, "standardize", "none"))
        heavy, elements = _rows(mol)
        pictures, _, _ = self.processor.render_images([smiles], on_error="raise")
        picture = pictures[0]
        prepared = prepare_for_drawing(mol)
        r_groups, backend = bool(self.processor.r_groups), self.processor.drawing_backend
        if not np.array_equal(render(prepared, self.size, DrawingStyle(), r_groups, backend), picture):
            raise RuntimeError(f"{smiles!r}: the processor's drawing differs from the one whose atom positions are "
                               "known; the explanation would be pooled onto the wrong places")
        geometry = drawing_geometry(prepared, self.size, DrawingStyle(), r_groups, backend)
        assignment = assign_pixels(geometry)
        pixel_values = self._pixels(picture)
        with torch.no_grad():
            if "attention_rollout" in self.methods:
                outputs = self.model(pixel_values=pixel_values, output_attentions=True)
                attentions = outputs.attentions or ()
                if not attentions or any(a is None for a in attentions):
                    raise RuntimeError("the model returned no attention weights although its attention "
                                       f"implementation is {self.model.config._attn_implementation!r}")
            else:
                outputs = self.model(pixel_values=pixel_values)
        output = float(outputs.logits[0, self.target_index])
        maps, delta = {}, None
        if "integrated_gradients" in self.methods:
            maps["integrated_gradients"], delta = integrated_gradients(
                self._output, pixel_values, self.baseline, self.steps, self.internal_batch_size)
        if "attention_rollout" in self.methods:
            grid = self.size // self.patch_size
            rolled = attention_rollout([a[0] for a in attentions])
            maps["attention_rollout"] = patch_map_to_pixels(cls_patch_shares(rolled, grid), self.patch_size)
        scores, coverage = {}, {}
        for method in self.methods:
            scores[method], coverage[method] = pool(maps[method], assignment)
        return _numbered_as_written(MoleculeExplanation(smiles, mol, heavy, elements, scores, output,
                                                        _prediction(self.task, output), coverage, delta, picture,
                                                        maps, _layout(prepared, heavy), standardized))


class FingerprintExplainer:
    """Explains a FingerprintPredictor through its Morgan bits. See the module docstring."""

    methods = FINGERPRINT_METHODS

    def __init__(self, model, target_index: int = 0, device=None):
        from moleclip.training.devices import choose_device

        self.model = model.to(choose_device(device)).eval()
        self.target_index = int(target_index)
        self.task = _task(model)

    def explain(self, smiles: str, index: int | None = None) -> MoleculeExplanation:
        from moleclip.processing.rendering import prepare_for_drawing

        mol, standardized = _prepared_input(smiles, index, self.model.settings.get("standardize", "none"))
        heavy, elements = _rows(mol)
        scores, output, _ = fingerprint_atom_scores(self.model, mol, self.target_index)
        return _numbered_as_written(MoleculeExplanation(
            smiles, mol, heavy, elements, {"fingerprint_occlusion": scores}, output, _prediction(self.task, output),
            coords=_layout(prepare_for_drawing(mol), heavy), standardized=standardized))


def make_explainer(kind, target: str | None = None, methods: Sequence[str] | None = None, steps: int = 50,
                   batch_size: int = 16, device=None, quick: bool = False):
    """An explainer for a model kind (`training.kinds`, what `prediction.load_predictor` returns): a MoleCLIP model
    through its drawing, a fingerprint MLP through its Morgan bits. `target` by name (default: the only one).
    `quick` (without `methods`): the one method an interactive page can afford per molecule."""
    from moleclip.training.kinds import FingerprintKind, ImageKind

    if not isinstance(kind, (ImageKind, FingerprintKind)) or not kind.has_predictions:
        raise ValueError(f"cannot explain a {kind.describe()} model: explain takes a finetuned MoleCLIP model or a "
                         "fingerprint MLP")
    index = resolve_target(kind.target_names, target)
    if isinstance(kind, FingerprintKind):
        if methods is not None and set(methods) - set(FINGERPRINT_METHODS):
            raise ValueError(f"a fingerprint model is explained by {', '.join(FINGERPRINT_METHODS)} only, "
                             f"not {', '.join(sorted(set(methods) - set(FINGERPRINT_METHODS)))}")
        return FingerprintExplainer(kind.model, index, device)
    methods = methods or (IMAGE_METHODS[:1] if quick else IMAGE_METHODS)
    return ImageExplainer(kind.model, kind.processor, index, methods, steps, batch_size, device)


# ------------------------------------------------------------------------------------------------------ pictures
def _titled(panel: Image.Image, title: str) -> Image.Image:
    out = Image.new("RGB", (panel.width, panel.height + 18), "white")
    out.paste(panel, (0, 18))
    ImageDraw.Draw(out).text((4, 3), title, fill="black")
    return out


def _side_by_side(panels: list[Image.Image]) -> Image.Image:
    out = Image.new("RGB", (sum(p.width for p in panels), max(p.height for p in panels)), "white")
    x = 0
    for panel in panels:
        out.paste(panel, (x, 0))
        x += panel.width
    return out


def atom_picture(explanation: MoleculeExplanation, size: int = 300) -> Image.Image:
    """The molecule coloured by each method's atom scores (RDKit's similarity-map convention: green positive, pink
    negative, each panel scaled to its largest |score|), one titled panel per method, in the layout the model saw."""
    from rdkit.Chem.Draw import SimilarityMaps, rdMolDraw2D

    mol = Chem.Mol(explanation.mol)
    mol.RemoveAllConformers()
    conformer = Chem.Conformer(mol.GetNumAtoms())
    for row, atom in enumerate(explanation.atom_indices):
        x, y = explanation.coords[row]
        conformer.SetAtomPosition(atom, (float(x), float(y), 0.0))
    mol.AddConformer(conformer, assignId=True)
    panels = []
    for method, scores in explanation.scores.items():
        weights = [0.0] * mol.GetNumAtoms()
        for row, atom in enumerate(explanation.atom_indices):
            weights[atom] = float(scores[row])
        drawer = rdMolDraw2D.MolDraw2DCairo(size, size)
        if mol.GetNumAtoms() > 1 and max(abs(w) for w in weights) > 0:
            SimilarityMaps.GetSimilarityMapFromWeights(mol, weights, drawer)
        elif mol.GetNumAtoms() == 1 and weights[0] != 0:  # RDKit's maps need two atoms: highlight in their colours
            colour = (0.55, 0.8, 0.55) if weights[0] > 0 else (0.9, 0.6, 0.8)
            drawer.DrawMolecule(mol, highlightAtoms=[0], highlightAtomColors={0: colour})
        else:  # nothing to colour (and the map would divide by zero)
            drawer.DrawMolecule(mol)
        drawer.FinishDrawing()
        panel = Image.open(io.BytesIO(drawer.GetDrawingText())).convert("RGB")
        panels.append(_titled(panel, method.replace("_", " ")))
    return _side_by_side(panels)


def heatmap_picture(explanation: MoleculeExplanation) -> Image.Image:
    """The drawing the model saw and, beside it, each pixel map over it: integrated gradients in blue (negative) and
    red (positive), scaled to the 99.5th percentile of its non-zero |values| so a few pixels cannot wash the rest out;
    attention rollout in red from its smallest share (clear) to its largest."""
    if explanation.picture is None:
        raise ValueError("a fingerprint model's explanation has no drawing")
    from matplotlib import colormaps

    base = explanation.picture.astype(np.float64) / 255.0
    grey = base.mean(axis=2, keepdims=True) * np.ones(3)
    panels = [_titled(_enlarged(Image.fromarray(explanation.picture)), "drawing")]
    for method, values in explanation.pixel_maps.items():
        if method == "integrated_gradients":  # signed, and zero off the ink
            magnitude = np.abs(values[values != 0])
            scale = (np.percentile(magnitude, 99.5) if magnitude.size else 0.0) or 1.0
            level = np.clip(values / scale, -1.0, 1.0)
            colours = colormaps["bwr"]((level + 1.0) / 2.0)[..., :3]
        else:  # shares of attention, all positive: what matters is where there is more
            spread = values.max() - values.min()
            level = (values - values.min()) / spread if spread > 0 else np.zeros_like(values)
            colours = colormaps["Reds"](level)[..., :3]
        alpha = np.abs(level)[..., None] * 0.85
        blended = grey * (1.0 - alpha) + colours * alpha
        overlay = Image.fromarray((blended * 255).round().astype(np.uint8))
        panels.append(_titled(_enlarged(overlay), method.replace("_", " ")))
    return _side_by_side(panels)


def _enlarged(picture: Image.Image, at_least: int = 224) -> Image.Image:
    """Small drawings blown up by a whole factor, pixel for pixel, so a heat map stays readable and exact."""
    factor = -(-at_least // picture.width)
    return picture if factor <= 1 else picture.resize((picture.width * factor, picture.height * factor),
                                                      Image.NEAREST)
