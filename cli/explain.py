"""Explain a finetuned model's predictions atom by atom: which parts of each molecule pushed the prediction.

A MoleCLIP model is explained on the drawing it sees (drawn and normalised by the processor saved with it) with
integrated gradients (from a blank canvas to the drawing; captum, `pip install "moleclip[explain]"`) and attention
rollout; the pixel attributions are pooled onto atoms through RDKit's own atom positions in that drawing (a pixel
near an atom goes to it, a pixel along a bond is split between the bond's two atoms). A fingerprint-baseline folder
is explained through its Morgan bits (each on-bit switched off in turn, its effect spread over the atoms of the bit's
environments), into the same table and pictures.

Writes into --output-dir:
  atoms.csv      one row per heavy atom: the input's columns, input_row (0-based position in the input), atom_index
                 (RDKit's, i.e. the SMILES' atom order; for a model that standardises its input, the order in which
                 explained_smiles writes the atoms), element, and one score column per method
  molecules.csv  one row per input row, in order: the input's columns, the target, the prediction of the folder's
                 saved model (value, or probability for classification; `moleclip predict` gives the ensemble's mean
                 when the folder has an ensemble, --no-uncertainty this model's), the output explained (the logit for classification), how much of
                 each pixel map reached atoms (coverage_*), the integrated-gradients convergence delta, the picture
                 files, and moleclip_skipped (why a row has no explanation); for a model that standardises its
                 input, explained_smiles: the molecule whose atoms the rows describe
  pictures/      row<N>_atoms.png (the molecule coloured by atom score, one panel per method, each with a colour
                 bar: green raises the output, pink lowers it) and, for MoleCLIP models, row<N>_pixels.png (the
                 drawing and each pixel heat map over it)

Scores are in the model's output units: integrated gradients and fingerprint occlusion sum to (about) the change in
output they explain (the target's units for regression, the logit for classification); attention rollout is the share
of the pooled token's attention that came from each atom's part of the drawing, the same for every target.

Examples:
  moleclip explain --model runs/esol/model --smiles "Clc1ccc(Cl)cc1" "CCO" --output-dir explain/esol
  moleclip explain --model runs/tox/model --input hits.csv --target NR-AR --output-dir explain/hits
"""

from __future__ import annotations

NAME = "explain"
HELP = "per-atom explanations of a finetuned model's predictions (integrated gradients, attention rollout)"

__all__ = ["NAME", "HELP", "OUTPUTS", "add_arguments", "run"]

OUTPUTS = ("atoms.csv", "molecules.csv", "pictures")
# Integrated gradients' sum should equal the change in output it explains; a larger gap than this share of it means
# the path integral needs more steps (a trained tiny model was 34 % off at 50 steps, 2.3 % at 128, 0.7 % at 300).
DELTA_WARNING = 0.1


def add_arguments(parser) -> None:
    from ._common import INPUT_HELP

    parser.add_argument("--model", required=True,
                        help="finetuned model folder (`moleclip finetune`'s <output-dir>/model, MoleCLIP or fingerprint "
                             "baseline) or Hub name")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--smiles", nargs="+", metavar="SMILES", help="molecules to explain")
    source.add_argument("--input", help=INPUT_HELP)
    parser.add_argument("--smiles-column", default=None,
                        help="the SMILES column of a table (default: the column named smiles, canonical_smiles, smi "
                             "or mol, any case)")
    parser.add_argument("--output-dir", required=True, help="folder for atoms.csv, molecules.csv and pictures/")
    parser.add_argument("--target", default=None, help="which target to explain, by name (default: the only one)")
    parser.add_argument("--methods", nargs="+", default=None, choices=("integrated_gradients", "attention_rollout"),
                        help="pixel methods for a MoleCLIP model (default: both)")
    parser.add_argument("--steps", type=int, default=50,
                        help="integrated-gradients steps (default 50); a warning names the molecules that need more")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="drawings per forward pass inside integrated gradients (default 16)")
    parser.add_argument("--no-pictures", action="store_true", help="write the tables only")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the explanations already in --output-dir")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


class _Listed:
    """The --smiles molecules, standing in for a file's table (rows reported by position, not file line)."""

    def __init__(self, smiles: list[str]):
        import pandas as pd

        self.frame = pd.DataFrame({"smiles": smiles})
        self.smiles = list(smiles)
        self.line = None

    def __len__(self) -> int:
        return len(self.frame)


def _refuse_forest(spec: str) -> None:
    """A random-forest folder would otherwise be refused as a pickle to trust, an option this command lacks."""
    from pathlib import Path

    from moleclip.training.kinds.baselines import ForestPredictor

    if (Path(spec) / ForestPredictor.CONFIG_FILE).is_file():
        raise ValueError(f"{spec} holds a random forest; moleclip explain explains MoleCLIP and fingerprint-MLP models")


def run(args) -> int:
    from moleclip.training.outputs import check_run_folder, hold_run_folder

    if args.steps < 2:
        raise ValueError(f"--steps must be at least 2, got {args.steps}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.device is not None:
        from moleclip.training.inference.devices import choose_device

        choose_device(args.device)  # a device this machine lacks: said before anything is loaded
    check_run_folder(args.output_dir, OUTPUTS, overwrite=args.overwrite, inputs={"--input": args.input})
    if args.input is not None:
        from ._common import read_input

        table = read_input(args.input, args.smiles_column)
        if not len(table):
            raise ValueError(f"{args.input} holds no molecules")
    else:
        table = _Listed(args.smiles)
    with hold_run_folder(args.output_dir, clear=OUTPUTS if args.overwrite else ()) as folder:
        return _explain(args, table, folder)


def _explain(args, table, folder) -> int:
    import numpy as np
    import pandas as pd
    from tqdm.auto import tqdm

    from moleclip.processing.molecules import InvalidMoleculeError, SkippedMolecule
    from moleclip.training.explaining.explainers import atom_picture, heatmap_picture, make_explainer
    from moleclip.training.outputs import SKIPPED_COLUMN, mark_skipped, refuse_column_clash, write_atomically
    from moleclip.training.inference.prediction import load_predictor

    from ._common import report_skipped, write_table

    _refuse_forest(args.model)
    kind = load_predictor(args.model)
    explainer = make_explainer(kind, target=args.target, methods=args.methods, steps=args.steps,
                               batch_size=args.batch_size, device=args.device)
    target = kind.target_names[explainer.target_index]
    methods = list(explainer.methods)
    frame = table.frame
    pixel_methods = [m for m in methods if m in ("integrated_gradients", "attention_rollout")]
    summary = {name: [np.nan] * len(frame) for name in
               ["prediction", "output", *[f"coverage_{m}" for m in pixel_methods]]}
    if "integrated_gradients" in methods:
        summary["integrated_gradients_delta"] = [np.nan] * len(frame)
    standardize = kind.standardize
    if standardize != "none":  # the rows' atoms are those of the standardised molecule: say which one it is
        summary["explained_smiles"] = [""] * len(frame)
    files = {"atoms_picture": [""] * len(frame)}
    if pixel_methods:
        files["pixels_picture"] = [""] * len(frame)
    written = {"input_row", "atom_index", "element", *methods, "target", *summary, *files, SKIPPED_COLUMN}
    refuse_column_clash(frame.columns, written, "the explanation writes")  # before any work
    atom_tables, skipped, unconverged = [], [], []
    digits = max(4, len(str(len(frame) - 1)))
    for row, smiles in enumerate(tqdm(table.smiles, desc="explaining", unit="molecule", disable=args.no_progress)):
        try:
            explanation = explainer.explain(smiles, index=row)
        except InvalidMoleculeError as err:
            skipped.append(SkippedMolecule(row, err.smiles, err.reason))
            continue
        atoms = pd.DataFrame({"input_row": row, "atom_index": explanation.atom_indices,
                              "element": explanation.elements, **explanation.scores})
        passed = frame.iloc[[row] * len(atoms)].reset_index(drop=True)
        atom_tables.append(pd.concat([passed, atoms], axis=1))
        summary["prediction"][row], summary["output"][row] = explanation.prediction, explanation.output
        for method, share in explanation.coverage.items():
            summary[f"coverage_{method}"][row] = share
        if explanation.delta is not None:
            summary["integrated_gradients_delta"][row] = explanation.delta
            if explanation.relative_delta > DELTA_WARNING:
                unconverged.append(row)
        if explanation.standardized is not None:
            summary["explained_smiles"][row] = explanation.standardized
        if not args.no_pictures:
            stem = f"row{row:0{digits}d}"
            pictures = {"atoms_picture": (f"pictures/{stem}_atoms.png", atom_picture)}
            if pixel_methods:
                pictures["pixels_picture"] = (f"pictures/{stem}_pixels.png", heatmap_picture)
            for column, (name, draw) in pictures.items():
                image = draw(explanation)
                write_atomically(folder / name, lambda tmp, image=image: image.save(tmp, format="PNG"))
                files[column][row] = name
    report_skipped(skipped, table, what="they have no rows in atoms.csv")
    if unconverged:
        rows = ", ".join(map(str, unconverged[:5])) + (f" and {len(unconverged) - 5} more" if len(unconverged) > 5 else "")
        print(f"warning: integrated gradients did not converge for {len(unconverged)} molecule(s) (input rows {rows}): "
              f"the convergence delta is over {DELTA_WARNING:.0%} of the change it explains "
              f"(integrated_gradients_delta in molecules.csv), so their scores are approximate; rerun with more "
              f"--steps than {args.steps}")
    if len(skipped) == len(frame):
        raise ValueError(f"none of the {len(frame)} molecules could be explained; nothing written")
    molecules = frame.copy()
    molecules["target"] = target
    for name, values in summary.items():
        molecules[name] = values
    if not args.no_pictures:
        for name, values in files.items():
            molecules[name] = values
    mark_skipped(molecules, skipped)
    atoms_table = pd.concat(atom_tables, ignore_index=True)
    write_table(atoms_table, str(folder / "atoms.csv"))
    write_table(molecules, str(folder / "molecules.csv"))
    print(f"explained {len(frame) - len(skipped)} of {len(frame)} molecules ({target}, {', '.join(methods)}) "
          f"into {folder}; {SKIPPED_COLUMN} in molecules.csv says why a row has no explanation" if skipped else
          f"explained {len(frame)} molecule{'s' if len(frame) != 1 else ''} ({target}, {', '.join(methods)}) into "
          f"{folder}")
    return 0
