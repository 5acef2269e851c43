"""Predict properties of new molecules with a finetuned model: a table of SMILES in, the same table with predictions out.

The model is a folder written by `moleclip finetune` (its `<output-dir>/model` folder) or a Hub repository holding
one (fetched whole, ensemble and applicability domain too, unless --no-uncertainty --no-domain). The output keeps every input row and adds one column per target: `predicted_<target>` (regression, in the target's
units) or `probability_<target>` (classification). Rows whose SMILES cannot be drawn keep empty prediction cells and
are listed in a warning. A fingerprint-baseline folder (`--baseline fingerprint`) works the same way.

New molecules are prepared as the model's training molecules were: a model finetuned with `--standardize parent`
standardises each input first (its processor, or its fingerprint settings, say so) and the output then has a
`moleclip_standardized_smiles` column showing the molecule each prediction belongs to.

A folder written by `moleclip finetune` also holds its ensemble (one model per seed of the chosen setting) and its
applicability domain, and predict uses them unless told not to (--no-uncertainty, --no-domain; --uncertainty and
--domain require them): the prediction is then the ensemble mean, with `<column>_spread`, and
`predicted_<target>_lower`/`_upper` (split-conformal intervals at the coverage chosen at finetuning, default 0.9) or
`calibrated_probability_<target>`, all calibrated on validation data; and `in_domain`, `nearest_similarity`
(Tanimoto, Morgan radius 2, 2048 bits), `nearest_training_smiles` and `nearest_training_<target>` (its measured
value); a MoleCLIP model adds `in_domain_embedding`, `nearest_embedding_similarity`,
`nearest_embedding_training_smiles` and `nearest_embedding_training_<target>` (cosine in its own embedding space). A random-forest folder needs --trust-pickle
(joblib = pickle).

Any file size: read, drawn and written chunk by chunk, resumable, and shared among the processes of `accelerate
launch`, as `moleclip embed` is (--chunk-size, --num-workers, --keep-parts, --overwrite; training/inference/screening.py).

Examples:
  moleclip predict --model runs/esol/model --input new_molecules.csv --output predictions.csv
  moleclip predict --model lab/moleclip-esol --input library.smi --output library_pred.parquet --batch-size 128
"""

from __future__ import annotations

import argparse

NAME = "predict"
HELP = "predict properties of molecules with a finetuned MoleCLIP model"

__all__ = ["NAME", "HELP", "add_arguments", "run"]


def add_arguments(parser) -> None:
    from ._common import add_input_arguments, add_screening_arguments

    parser.add_argument("--model", required=True,
                        help="finetuned model folder (`moleclip finetune`'s <output-dir>/model) or Hub name")
    add_input_arguments(parser, smiles_default="the column the model was finetuned on, when it was named and the "
                        "table has it; else")
    parser.add_argument("--output", required=True, help=".csv, .tsv (optionally .gz) or .parquet")
    parser.add_argument("--batch-size", type=int, default=64, help="molecules per forward pass")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--uncertainty", action=argparse.BooleanOptionalAction, default=None,
                        help="the model folder's ensemble (one model per finetuning seed): its mean, spread, and "
                        "conformal intervals (_lower/_upper, regression) or calibrated probabilities (classification), "
                        "calibrated on validation by `moleclip finetune` (default: when the folder has them; costs one "
                        "prediction per member)")
    parser.add_argument("--domain", action=argparse.BooleanOptionalAction, default=None,
                        help="in_domain, nearest_similarity and the nearest training molecule (SMILES and measured "
                        "values): Tanimoto similarity of Morgan bits against the training molecules (default: when the "
                        "folder has them)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow loading a random-forest folder (`--baseline random_forest`), saved with joblib: "
                        "loading it runs pickle, which can execute code; only for folders you made or trust")
    add_screening_arguments(parser)


def run(args) -> int:
    from moleclip.training.inference.screening import hold_output

    from ._common import TABLE_SUFFIXES, check_output_suffix

    check_output_suffix(args.output, TABLE_SUFFIXES, inputs={"--input": args.input})
    if args.batch_size < 1:
        raise ValueError("--batch-size must be >= 1")
    with hold_output(args.output):  # a second process writing the same file is refused, not silently lost
        return _predict(args)


# What a model folder's predictions come from: weights, settings, calibration and domain (not its cards or code).
MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".npy", ".joblib")


def _model_files(folder) -> dict:
    """Size and modification time of every file the predictions come from (the ensemble's too), like the input
    file's record: a folder that a new finetuning wrote again at the same path no longer matches the shards an
    unfinished run computed with the old model, so they are not mixed into one output."""
    from pathlib import Path

    root = Path(folder)
    if not root.is_dir():
        return {}
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in MODEL_FILE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    return {p.relative_to(root).as_posix(): [p.stat().st_size, p.stat().st_mtime_ns] for p in files}


def _predict(args) -> int:
    from moleclip.processing.tables import table_smiles_column
    from moleclip.training.inference import screening
    from moleclip.training.inference.devices import process_rank
    from moleclip.training.inference.prediction import Predictor

    from ._common import model_name, report_screen, screening_arguments, screening_workers

    predictor = Predictor.load(args.model, trust_pickle=args.trust_pickle, uncertainty=args.uncertainty,
                               domain=args.domain, device=args.device)
    args.smiles_column = table_smiles_column(args.input, args.smiles_column, predictor.smiles_column)
    rank = process_rank()[0]

    def warn(chunk):
        if predictor.standardize == "none" and rank == 0:
            from moleclip.processing.molecules import warn_about_fragments

            warn_about_fragments(chunk.smiles, str(args.input) if len(chunk) < args.chunk_size else
                                 f"{args.input} (its first {len(chunk)} rows)")

    workers = screening_workers(args)

    def compute(chunk):
        result = predictor.predict(chunk.smiles, batch_size=args.batch_size, progress=False, num_workers=workers)
        return result.columns, result.skipped, result.standardized

    # what decides the predictions: a resumed run must have computed its finished shards the same way
    decides = {"command": "predict", "model": model_name(args.model), "model_files": _model_files(predictor.spec),
               "smiles_column": args.smiles_column, "uncertainty": predictor.trust is not None,
               "domain": predictor.domain is not None}
    summary = screening.screen(args.input, args.output, compute, decides, progress=not args.no_progress,
                               first_chunk=warn, **screening_arguments(args))
    if rank != 0:
        return 0  # the main process of the launch assembles and reports
    report_screen(summary)
    if predictor.standardize != "none":
        print(f"molecules standardised as the model's training molecules were ({predictor.standardize})")
    used = [what for what, on in (("the ensemble's intervals", predictor.trust is not None),
                                  ("the applicability domain", predictor.domain is not None)) if on]
    print(f"wrote predictions for {summary.written} of {summary.rows} molecules to {args.output}"
          + (f" (with {' and '.join(used)})" if used else ""))
    return 0
