"""Predict properties of new molecules with a finetuned model: a table of SMILES in, the same table with predictions out.

The model is a folder written by `moleclip finetune` (its `<output-dir>/model` folder) or a Hub repository holding
one. The
output keeps every input row and adds one column per target: `predicted_<target>` (regression, in the target's
units) or `probability_<target>` (classification). Rows whose SMILES cannot be drawn keep empty prediction cells and
are listed in a warning. A fingerprint-baseline folder (`--baseline fingerprint`) works the same way.

New molecules are prepared as the model's training molecules were: a model finetuned with `--standardize parent`
standardises each input first (its processor, or its fingerprint settings, say so) and the output then has a
`moleclip_standardized_smiles` column showing the molecule each prediction belongs to.

With --uncertainty, a folder written by `moleclip finetune` gives the mean of its ensemble (one model per seed of
the chosen setting) with `<column>_spread`, and `predicted_<target>_lower`/`_upper` (split-conformal intervals at the
coverage chosen at finetuning, default 0.9) or `calibrated_probability_<target>`; all calibrated on validation data.
With --domain: `in_domain`, `nearest_similarity` (Tanimoto, Morgan radius 2, 2048 bits), `nearest_training_smiles`
and `nearest_training_<target>` (its measured value). A random-forest folder needs --trust-pickle (joblib = pickle).

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
    parser.add_argument("--uncertainty", action="store_true",
                        help="use the model folder's ensemble (one model per finetuning seed): the ensemble mean, its "
                        "spread, and conformal intervals (_lower/_upper, regression) or calibrated probabilities "
                        "(classification), calibrated on validation by `moleclip finetune`")
    parser.add_argument("--domain", action="store_true",
                        help="add in_domain, nearest_similarity and the nearest training molecule (SMILES and measured "
                        "values): Tanimoto similarity of Morgan bits against the saved run's training molecules")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow loading a random-forest folder (`--baseline random_forest`), saved with joblib: "
                        "loading it runs pickle, which can execute code; only for folders you made or trust")


def load_predictor(spec: str, trust_pickle: bool = False):
    """(model, processor) for a finetuned MoleCLIP folder or Hub repo; (FingerprintPredictor or ForestPredictor,
    None) for a baseline. A forest is loaded only with `trust_pickle` (its joblib file runs pickle).

    A pretrained encoder without a trained head is refused: its "predictions" would come from random weights.
    """
    from pathlib import Path

    from moleclip.training.baselines import FingerprintPredictor, ForestPredictor
    from moleclip.training.hub import read_model_config

    path = Path(spec)
    if path.is_dir() and (path / FingerprintPredictor.CONFIG_FILE).is_file():
        return FingerprintPredictor.load(path), None
    if path.is_dir() and (path / ForestPredictor.CONFIG_FILE).is_file():
        return ForestPredictor.load(path, trust_pickle=trust_pickle), None
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

    if processor is None:  # fingerprint baselines
        from moleclip.processing.fingerprints import morgan_fingerprints
        from moleclip.training.baselines import ForestPredictor

        result = morgan_fingerprints(smiles, radius=model.settings["radius"], n_bits=model.settings["in_features"],
                                     progress=progress, standardize=model.settings.get("standardize", "none"))
        outputs = []
        if isinstance(model, ForestPredictor):  # values, or positive-class probabilities, already
            outputs.append(model.predict(result.bits))
        else:
            model = model.to(device or "cpu").eval()
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
    model, processor = load_predictor(args.model, trust_pickle=getattr(args, "trust_pickle", False))
    method = model.settings.get("standardize", "none") if processor is None else processor.standardize
    if method == "none":
        from moleclip.processing.molecules import warn_about_fragments

        warn_about_fragments(table.smiles, args.input)
    trust = _read_trust(args.model) if args.uncertainty else None
    domain = _read_domain(args.model) if args.domain else None
    values, names, skipped, task = predict_table(model, processor, table.smiles, batch_size=args.batch_size,
                                                 device=args.device, progress=not args.no_progress)
    report_skipped(skipped, table)
    if len(skipped) == len(frame):
        raise ValueError(f"none of the {len(frame)} molecules in {args.input} could be used; nothing written")
    extra = {}
    if trust is not None:
        values, extra = _ensemble_columns(args, trust, table.smiles, names, task, skipped, model, processor)
    prefix = "probability" if task == "classification" else "predicted"
    columns = [f"{prefix}_{name}" for name in names] if task != "multiclass" else [f"probability_class_{j}" for j in range(values.shape[1])]
    for j, name in enumerate(columns):
        frame[name] = values[:, j]
    for name, column in extra.items():
        frame[name] = column
    if domain is not None:
        _domain_columns(frame, domain, table.smiles, method, names)
    mark_skipped(frame, skipped)
    mark_standardized(frame, table.smiles, method)
    write_table(frame, args.output)
    if method != "none":
        print(f"molecules standardised as the model's training molecules were ({method})")
    print(f"wrote predictions for {len(frame) - len(skipped)} of {len(frame)} molecules to {args.output}")
    return 0


def _read_trust(spec: str) -> dict:
    import json
    from pathlib import Path

    from moleclip.training.finetuning.trust import TRUST_FILE

    path = Path(spec) / TRUST_FILE
    if not path.is_file():
        raise ValueError(f"{spec} has no {TRUST_FILE}: --uncertainty needs a model folder written by this version of "
                         "`moleclip finetune` (it keeps one model per seed and their calibration)")
    return json.loads(path.read_text())


def _read_domain(spec: str):
    from pathlib import Path

    from moleclip.training.applicability import METADATA_FILE, ApplicabilityDomain

    if not (Path(spec) / METADATA_FILE).is_file():
        raise ValueError(f"{spec} has no {METADATA_FILE}: --domain needs a model folder written by this version of "
                         "`moleclip finetune`")
    return ApplicabilityDomain.load(spec)


def _ensemble_columns(args, trust: dict, smiles, names, task, skipped, base, base_processor):
    """Every member's predictions, combined: (ensemble values [N, T] with NaN rows where skipped, extra columns)."""
    from pathlib import Path

    import numpy as np

    from moleclip.training.finetuning.trust import MEMBER_FILE, interval_columns, load_head_member
    from moleclip.training.uncertainty import calibration_from_dict, ensemble

    missing = {s.index for s in skipped}
    usable = np.array([i not in missing for i in range(len(smiles))])
    members = []
    for folder in trust["members"]:
        path = Path(args.model) / folder
        if (path / MEMBER_FILE).is_file():  # frozen mode: a head on the encoder of the main folder
            model, processor = load_head_member(path, base), base_processor
        else:
            model, processor = load_predictor(str(path), trust_pickle=args.trust_pickle)
        values, _, member_skipped, _ = predict_table(model, processor, smiles, batch_size=args.batch_size,
                                                     device=args.device, progress=False)
        if {s.index for s in member_skipped} != missing:  # all members prepare molecules the same way
            raise ValueError(f"ensemble member {folder} could not use the same molecules as the saved model")
        values = values[usable].astype(np.float64)
        if task == "classification":  # members give probabilities; the ensemble averages them (as logits)
            p = np.clip(values, 1e-6, 1 - 1e-6)
            values = np.log(p) - np.log1p(-p)
        members.append(values)
    ens = ensemble(members, task)
    calibration = calibration_from_dict(trust["calibration"])
    spread = ens.spread if trust["scope"] == "ensemble" else None
    prefix = "probability" if task == "classification" else "predicted"
    out = {f"{prefix}_{name}_spread": ens.spread[:, j] for j, name in enumerate(names)}
    out.update(interval_columns(task, list(names), calibration, ens.mean, spread))
    full = {name: _scatter(column, usable) for name, column in out.items()}
    mean = ens.mean if task != "classification" else 1.0 / (1.0 + np.exp(-ens.mean))
    return _scatter(mean, usable), full


def _scatter(values, usable):
    import numpy as np

    full = np.full((len(usable), *np.shape(values)[1:]), np.nan)
    full[usable] = values
    return full


def _domain_columns(frame, domain, smiles, method: str, names) -> None:
    """in_domain, nearest_similarity, the nearest training molecule and its measured values (empty where the
    molecule has no fingerprint); molecules are standardised as the training ones were."""
    import numpy as np

    if method != "none":
        from moleclip.processing.standardize import standardize_smiles

        smiles = standardize_smiles(smiles, method).smiles
    result = domain.query_fingerprints(smiles)
    kept = np.asarray(result.kept, dtype=np.int64)
    near = domain.neighbours(result.bits, k=1) if len(kept) else None
    score = domain.scores(result.bits) if len(kept) else np.zeros(0)
    column = np.full(len(frame), None, dtype=object)
    column[kept] = score >= domain.threshold
    frame["in_domain"] = column
    frame["nearest_similarity"] = _scatter(near.similarities[:, 0] if near is not None else np.zeros(0),
                                           np.isin(np.arange(len(frame)), kept))
    ids = np.full(len(frame), "", dtype=object)
    if near is not None and domain.reference_ids:
        ids[kept] = [domain.reference_ids[i] for i in near.indices[:, 0]]
    frame["nearest_training_smiles"] = ids
    if near is not None and domain.reference_labels:
        labels = np.asarray(domain.reference_labels, dtype=np.float64).reshape(len(domain.reference_labels), -1)
        for j, name in enumerate(names):
            values = np.full(len(frame), np.nan)
            values[kept] = labels[near.indices[:, 0], j]
            frame[f"nearest_training_{name}"] = values
