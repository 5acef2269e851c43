"""Why did a model predict that? Per-atom explanations of MoleCLIP and fingerprint models (`moleclip explain`).

A MoleCLIP model is explained on the very drawing it sees: the processor that comes with it draws the molecule (same
size, back end, R-group setting) and turns it into pixel values (channel order, mean and std), and the pixel
attributions (integrated gradients, attention rollout; see :mod:`moleclip.training.explaining.attribution`) are pooled onto the
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
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.ticker import FuncFormatter
from PIL import Image
from rdkit import Chem
from rdkit.Chem.Draw import rdMolDraw2D

from moleclip.processing.molecules import InvalidMoleculeError, to_mol
from moleclip.processing.rendering import DrawingStyle, prepare_for_drawing, render
from moleclip.processing.standardize import standardize_mol
from moleclip.tasks import is_classification
from moleclip.training.explaining.attribution import (
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
from moleclip.training.evaluation.plots import fit_text
from moleclip.training.inference.devices import choose_device
from moleclip.training.kinds import FingerprintKind, ImageKind

__all__ = [
    "FINGERPRINT_METHODS",
    "IMAGE_METHODS",
    "METHOD_NAMES",
    "FingerprintExplainer",
    "ImageExplainer",
    "MoleculeExplanation",
    "atom_figure",
    "atom_picture",
    "heatmap_figure",
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
        target, task: the target explained, by name, and the model's task ("regression" or "classification"), for
            the pictures to say what the scores are contributions to.
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
    target: str = ""
    task: str = "regression"

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
        raise InvalidMoleculeError(Chem.MolToSmiles(mol), None, "has no heavy atoms to explain")
    return heavy, [mol.GetAtomWithIdx(i).GetSymbol() for i in heavy]


def _prepared_input(smiles: str, index: int | None, method: str) -> tuple[Chem.Mol, str | None]:
    """The molecule the model sees, parsed by the package's strict parser and standardised as the model's training
    molecules were (`method`, the processor's or fingerprint model's `standardize` setting), and its SMILES when
    standardisation applies."""
    mol = to_mol(smiles, index)
    if method in (None, "none"):
        return mol, None
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
        self.target = ImageKind(model, processor).target_names[self.target_index]  # what the pictures name
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
                                                        maps, _layout(prepared, heavy), standardized,
                                                        self.target, self.task))


class FingerprintExplainer:
    """Explains a FingerprintPredictor through its Morgan bits. See the module docstring."""

    methods = FINGERPRINT_METHODS

    def __init__(self, model, target_index: int = 0, device=None):
        self.model = model.to(choose_device(device)).eval()
        self.target_index = int(target_index)
        self.target = FingerprintKind(model).target_names[self.target_index]  # what the pictures name
        self.task = _task(model)

    def explain(self, smiles: str, index: int | None = None) -> MoleculeExplanation:
        mol, standardized = _prepared_input(smiles, index, self.model.settings.get("standardize", "none"))
        heavy, elements = _rows(mol)
        scores, output, _ = fingerprint_atom_scores(self.model, mol, self.target_index)
        return _numbered_as_written(MoleculeExplanation(
            smiles, mol, heavy, elements, {"fingerprint_occlusion": scores}, output, _prediction(self.task, output),
            coords=_layout(prepare_for_drawing(mol), heavy), standardized=standardized,
            target=self.target, task=self.task))


def make_explainer(kind, target: str | None = None, methods: Sequence[str] | None = None, steps: int = 50,
                   batch_size: int = 16, device=None, quick: bool = False):
    """An explainer for a model kind (`training.kinds`, what `prediction.load_predictor` returns): a MoleCLIP model
    through its drawing, a fingerprint MLP through its Morgan bits. `target` by name (default: the only one).
    `quick` (without `methods`): the one method an interactive page can afford per molecule."""
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
# What each method is called in a picture.
METHOD_NAMES = {"integrated_gradients": "integrated gradients", "attention_rollout": "attention rollout",
                "fingerprint_occlusion": "fingerprint bit occlusion"}
# Signed scores: pink lowers the output, green raises it (RDKit's similarity-map convention), white is no effect.
SIGNED_COLOURS = LinearSegmentedColormap.from_list(
    "moleclip_signed", [colormaps["PiYG"](0.0), colormaps["PiYG"](0.25), (1, 1, 1, 1), colormaps["PiYG"](0.75),
                        colormaps["PiYG"](1.0)], N=255)  # odd: zero falls on the white entry itself
# Attention shares are all positive: white (least) to orange (most), apart from the signed colours.
SHARE_COLOURS = colormaps["Oranges"]
_DPI = 100


def _score_key(explanation: MoleculeExplanation, method: str) -> str:
    """What a colour bar measures, in words."""
    if method == "attention_rollout":
        return "share of the pooled token's attention (1 = all of it)"
    what = (f"the logit of {explanation.target}" if is_classification(explanation.task)
            else f"predicted {explanation.target}" if explanation.target else "the model's output")
    return f"contribution to {what} (pink lowers it, green raises it)"


def _headline(explanation: MoleculeExplanation) -> str:
    if is_classification(explanation.task):
        return f"{explanation.target}: predicted probability {explanation.prediction:.3g}"
    return f"{explanation.target or 'output'}: predicted {explanation.prediction:.4g}"


def _colouring(method: str, largest: float) -> tuple:
    """(colour map, scale) for a method's values: signed methods symmetric around zero, shares from zero."""
    largest = float(largest) or 1.0
    if method == "attention_rollout":
        return SHARE_COLOURS, Normalize(0.0, largest, clip=True)
    return SIGNED_COLOURS, Normalize(-largest, largest, clip=True)


def _panels_figure(explanation: MoleculeExplanation, count: int, size: int):
    """A figure of `count` panels of about `size` px, each with room for a title and a colour bar under it, titled
    with the target and the prediction; returns it, the panels and the width a panel's texts may take."""
    # matplotlib is not loaded by `import moleclip`; only the pictures need it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(count * (size + 20) / _DPI, (size + 210) / _DPI), dpi=_DPI, layout="compressed")
    FigureCanvasAgg(fig)
    fit_text(fig.suptitle(_headline(explanation), fontsize=13), 0.95 * count * (size + 20))
    return fig, fig.subplots(1, count, squeeze=False)[0], 0.95 * size


def _show(fig, ax, width: float, image: np.ndarray, title: str, cmap=None, norm=None, key: str = "",
          extend: str = "neither") -> None:
    """`image` in panel `ax` under `title`, with a colour bar saying what `key` each colour stands for."""
    ax.imshow(image, interpolation="antialiased")
    ax.set_xticks([])
    ax.set_yticks([])
    fit_text(ax.set_title(title, fontsize=12), width)
    if cmap is not None:
        bar = fig.colorbar(ScalarMappable(norm, cmap), ax=ax, orientation="horizontal", fraction=0.06, pad=0.03,
                           extend=extend)
        # the ends and zero only: a row of small numbers would run together
        bar.set_ticks(sorted({norm.vmin, 0.0, norm.vmax} if norm.vmin < 0 else {norm.vmin, norm.vmax}))
        bar.ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.2g}".replace("-", "−")))
        bar.ax.tick_params(labelsize=10)
        bar.set_label(key, fontsize=10)
        fit_text(bar.ax.xaxis.label, width)


def _picture(fig, margin: int = 10) -> Image.Image:
    """The figure as a picture, cut to what is drawn on it and `margin` px around it (the panels are square, the
    figure is made tall enough for any title and colour bar)."""
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    drawn = np.argwhere((pixels < 250).any(axis=2))
    (top, left), (bottom, right) = drawn.min(axis=0) - margin, drawn.max(axis=0) + margin + 1
    return Image.fromarray(pixels[max(top, 0):bottom, max(left, 0):right].copy())


def _atom_field(mol: Chem.Mol, weights: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(the molecule drawn on white at `size` px, RGB in 0..1; the sum over atoms of weight x a Gaussian around the
    atom, a third of a bond length wide, so the field at an atom is its own weight within a few per cent)."""
    drawer = rdMolDraw2D.MolDraw2DCairo(size, size)
    drawer.DrawMolecule(mol)
    drawer.FinishDrawing()
    drawing = np.asarray(Image.open(io.BytesIO(drawer.GetDrawingText())).convert("RGB"), dtype=np.float64) / 255.0
    points = np.array([[drawer.GetDrawCoords(i).x, drawer.GetDrawCoords(i).y] for i in range(mol.GetNumAtoms())])
    bonds = [np.linalg.norm(points[b.GetBeginAtomIdx()] - points[b.GetEndAtomIdx()]) for b in mol.GetBonds()]
    sigma = (np.median(bonds) if bonds else size / 5) / 3.0
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    field = np.zeros((size, size))
    for (x, y), weight in zip(points, weights):
        if weight:
            field += weight * np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma ** 2))
    return drawing, field


def atom_picture(explanation: MoleculeExplanation, size: int = 450) -> Image.Image:
    """`atom_figure` as a picture, cut to what is drawn."""
    return _picture(atom_figure(explanation, size))


def atom_figure(explanation: MoleculeExplanation, size: int = 450):
    """The molecule coloured by each method's atom scores, one panel of about `size` px per method, in the layout the
    model saw: each atom sits in a patch of its score's colour (pink lowers the output, green raises it; attention
    shares from white to orange), scaled to the panel's largest |score|, which the colour bar under it shows in the
    scores' units. The title names the target and the prediction. A matplotlib Figure (Agg canvas)."""
    mol = Chem.Mol(explanation.mol)
    mol.RemoveAllConformers()
    conformer = Chem.Conformer(mol.GetNumAtoms())
    for row, atom in enumerate(explanation.atom_indices):
        x, y = explanation.coords[row]
        conformer.SetAtomPosition(atom, (float(x), float(y), 0.0))
    mol.AddConformer(conformer, assignId=True)
    fig, axes, width = _panels_figure(explanation, len(explanation.scores), size)
    for ax, (method, scores) in zip(axes, explanation.scores.items()):
        weights = np.zeros(mol.GetNumAtoms())
        weights[explanation.atom_indices] = np.asarray(scores, dtype=np.float64)
        drawing, field = _atom_field(mol, weights, size)
        cmap, norm = _colouring(method, np.abs(weights).max())
        # multiplied, so the bonds and atom labels stay as drawn over the colours
        _show(fig, ax, width, cmap(norm(field))[..., :3] * drawing, METHOD_NAMES.get(method, method.replace("_", " ")),
              cmap, norm, _score_key(explanation, method))
    return fig


def heatmap_picture(explanation: MoleculeExplanation, scale: int = 2) -> Image.Image:
    """`heatmap_figure` as a picture, cut to what is drawn."""
    return _picture(heatmap_figure(explanation, scale))


def heatmap_figure(explanation: MoleculeExplanation, scale: int = 2):
    """The drawing the model saw and, beside it, each pixel map over it, every panel blown up `scale` times pixel for
    pixel (a matplotlib Figure, Agg canvas). Integrated gradients sit on the ink only, in lines a pixel or two wide:
    they are shown smoothed (Gaussian, 2 px) in the atom pictures' colours (pink lowers, green raises), scaled to the
    98th percentile of the smoothed |values| so a few pixels cannot wash the rest out. Attention rollout is shown
    relative to an even spread over the picture, from white (its smallest share) to orange."""
    if explanation.picture is None:
        raise ValueError("a fingerprint model's explanation has no drawing")
    # scipy.ndimage is not loaded by `import moleclip`; only the fingerprint picture needs it
    from scipy.ndimage import gaussian_filter

    drawing = explanation.picture.astype(np.float64) / 255.0
    # the ink in mid grey, so a map's colours show on the lines as well as around them
    faded = 0.5 + 0.5 * drawing.mean(axis=2, keepdims=True) * np.ones(3)
    fig, axes, width = _panels_figure(explanation, 1 + len(explanation.pixel_maps),
                                      explanation.picture.shape[0] * scale)
    _show(fig, axes[0], width, _enlarged(drawing, scale), "the drawing the model saw")
    for ax, (method, values) in zip(axes[1:], explanation.pixel_maps.items()):
        extend, title = "neither", METHOD_NAMES.get(method, method.replace("_", " "))
        if method == "integrated_gradients":  # signed, and zero off the ink
            values = gaussian_filter(np.asarray(values, dtype=np.float64), sigma=2.0)
            magnitude = np.abs(values[values != 0])
            cmap, norm = _colouring(method, np.percentile(magnitude, 98) if magnitude.size else 0.0)
            extend, title = "both", f"{title} (smoothed over 2 px)"
            key = _score_key(explanation, method) + ", per pixel"
        else:  # what matters is where there is more: relative to attention spread evenly over the picture
            values = values / values.mean()
            cmap, norm = _colouring(method, values.max())
            norm.vmin = float(values.min())
            key = "attention relative to an even spread (1 = even)"
        _show(fig, ax, width, _enlarged(cmap(norm(values))[..., :3] * faded, scale), title, cmap, norm, key, extend)
    return fig


def _enlarged(picture: np.ndarray, scale: int) -> np.ndarray:
    """A picture blown up by a whole factor, pixel for pixel, so a heat map stays exact."""
    return np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1) if scale > 1 else picture
