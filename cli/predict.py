"""Predict properties of new molecules with a finetuned model: a table of SMILES in, the same table with predictions out.

The model is a folder written by `moleclip finetune` (its `<output-dir>/model` folder) or a Hub repository holding
one. The
output keeps every input row and adds one column per target: `predicted_<target>` (regression, in the target's
units) or `probability_<target>` (classification). Rows whose SMILES cannot be drawn keep empty prediction cells and
are listed in a warning. A fingerprint-baseline folder (`--baseline fingerprint`) works the same way.

New molecules are prepared as the model's training molecules were: a model finetuned with `--standardize parent`
standardises each input first (its processor, or its fingerprint settings, say so) and the output then has a
`moleclip_standardized_smiles` column showing the molecule each prediction belongs to.

Examples:
  moleclip predict --model runs/esol/model --input new_molecules.csv --output predictions.csv
  moleclip predict --model lab/moleclip-esol --input library.smi --output library_pred.parquet --batch-size 128
"""

from __future__ import annotations

NAME = "predict"
HELP = "predict properties of molecules with a finetuned MoleCLIP model"

__all__ = ["NAME", "HELP", "add_arguments", "run", "load_predictor", "predict_table"]


def add_arguments(parser) -> None:
    from ._common import add_input_arguments

    parser.add_argument("--model", required=True,
                        help="finetuned model folder (`moleclip finetune`'s <output-dir>/model) or Hub name")
    add_input_arguments(parser)
    parser.add_argument("--output", required=True, help=".csv, .tsv (optionally .gz) or .parquet")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best available)")
    parser.add_argument("--no-progress", action="store_true")


def load_predictor(spec: str):
    """(model, processor) for a finetuned MoleCLIP folder or Hub repo; (FingerprintPredictor, None) for a baseline.

    A pretrained encoder without a trained head is refused: its "predictions" would come from random weights.
    """
    from pathlib import Path

    from moleclip.training.baselines import FingerprintPredictor
    from moleclip.training.hub import read_model_config

    path = Path(spec)
    if path.is_dir() and (path / FingerprintPredictor.CONFIG_FILE).is_file():
        return FingerprintPredictor.load(path), None
    architectures = read_model_config(spec).get("architectures") or []
    if "MoleCLIPForPropertyPrediction" not in architectures:
        raise ValueError(
            f"{spec} is not a finetuned property model (architectures: {architectures or 'none recorded'}); "
            "finetune it first with `moleclip finetune` and pass its model/ folder"
        )
    from moleclip import MoleCLIPForPropertyPrediction
    from moleclip.training.hub import load_backbone, load_processor

    model = load_backbone(spec, MoleCLIPForPropertyPrediction, new_heads=False)  # every weight from the checkpoint
    return model.eval(), load_processor(spec)


def predict_table(model, processor, smiles: list[str], batch_size: int = 64, device=None, progress: bool = True):
    """(predictions [N, T] with NaN rows for molecules that could not be used, target names, skipped entries)."""
    import numpy as np
    import torch

    if processor is None:  # fingerprint baseline
        from moleclip.processing.fingerprints import morgan_fingerprints

        result = morgan_fingerprints(smiles, radius=model.settings["radius"], n_bits=model.settings["in_features"],
                                     progress=progress, standardize=model.settings.get("standardize", "none"))
        model = model.to(device or "cpu").eval()
        outputs = []
        with torch.no_grad():
            for start in range(0, len(result.kept), batch_size):
                x = torch.as_tensor(result.bits[start:start + batch_size], dtype=torch.float32,
                                    device=next(model.parameters()).device)
                logits = model(features=x).logits
                outputs.append((torch.sigmoid(logits) if model.task == "classification" else logits).cpu().numpy())
        values = np.concatenate(outputs) if outputs else np.zeros((0, model.settings["num_targets"]))
        kept, skipped = result.kept, result.skipped
        names = model.settings.get("target_names") or [f"target_{j}" for j in range(model.settings["num_targets"])]
        task = model.task
    else:
        from moleclip.training.inference import predict_smiles

        values, kept, skipped = predict_smiles(model, processor, smiles, batch_size=batch_size, device=device,
                                               progress=progress, on_error="skip")
        names = model.config.target_names or [f"target_{j}" for j in range(model.config.num_targets)]
        task = model.config.task
    full = np.full((len(smiles), values.shape[1] if values.ndim == 2 and values.shape[1] else len(names)), np.nan)
    if len(kept):
        full[np.asarray(kept)] = values
    return full, list(names), skipped, task


def run(args) -> int:
    from moleclip.training.outputs import hold_output_file

    from ._common import TABLE_SUFFIXES, check_output_suffix

    check_output_suffix(args.output, TABLE_SUFFIXES)
    with hold_output_file(args.output):  # a second process writing the same file is refused, not silently lost
        return _predict(args)


def _predict(args) -> int:
    from ._common import mark_skipped, mark_standardized, read_input, report_skipped, write_table

    if args.batch_size < 1:
        raise ValueError("--batch-size must be >= 1")
    table = read_input(args.input, args.smiles_column)
    frame = table.frame
    if not len(frame):
        raise ValueError(f"{args.input} holds no molecules")
    model, processor = load_predictor(args.model)
    method = model.settings.get("standardize", "none") if processor is None else processor.standardize
    if method == "none":
        from moleclip.processing.molecules import warn_about_fragments

        warn_about_fragments(table.smiles, args.input)
    values, names, skipped, task = predict_table(model, processor, table.smiles, batch_size=args.batch_size,
                                                 device=args.device, progress=not args.no_progress)
    report_skipped(skipped, table)
    if len(skipped) == len(frame):
        raise ValueError(f"none of the {len(frame)} molecules in {args.input} could be used; nothing written")
    prefix = "probability" if task == "classification" else "predicted"
    columns = [f"{prefix}_{name}" for name in names] if task != "multiclass" else [f"probability_class_{j}" for j in range(values.shape[1])]
    for j, name in enumerate(columns):
        frame[name] = values[:, j]
    mark_skipped(frame, skipped)
    mark_standardized(frame, table.smiles, method)
    write_table(frame, args.output)
    if method != "none":
        print(f"molecules standardised as the model's training molecules were ({method})")
    print(f"wrote predictions for {len(frame) - len(skipped)} of {len(frame)} molecules to {args.output}")
    return 0
