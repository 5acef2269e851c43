"""How far to trust a finetuned model's predictions, built from the chosen setting's runs (one per seed) and saved in
the model folder for `moleclip predict --uncertainty --domain`.

* Ensemble: every seed's model of the chosen setting is kept (`model/ensemble/seed_<s>/`, each a complete folder of
  its mode: MoleCLIP checkpoint, fingerprint MLP or random forest); predict returns their mean and spread. For a random
  forest the members are the seeds' forests (each already an average of trees; the spread is between forests).
* Calibration on validation only (`training/uncertainty.py`; its test reports: `training/uncertainty_report.py`):
  - shared split (every seed has the same validation and test rows: scaffold splits, or a split column with valid
    rows): the members form one ensemble on the same molecules, so intervals / probabilities are calibrated on the
    ensemble mean (and spread: normalised intervals are chosen when cross-validation on validation says they are
    narrower) and tested on the ensemble's test predictions;
  - per-seed splits (random, random_scaffold, or a validation part carved per seed): a molecule in one seed's
    validation part is in another seed's training part, so no ensemble prediction is out-of-sample on any common
    part. Each member's own validation residuals (or logits) are then pooled, plain intervals (one width per target)
    are calibrated on them, and the report pools each member's own test part. Predict applies them around the
    ensemble mean, which is usually at least as accurate as one member: the intervals are then, if anything, wide.
* Applicability domain (`training/applicability.py`): Tanimoto similarity of Morgan bits to the training molecules of
  the saved run (`model/`), threshold from its validation molecules; the report flags that run's test molecules. A
  MoleCLIP model also gets the same in its own embedding space (cosine; `save_embedding_domain`).

Test labels are read only by the reports, never by a fit or a choice.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from moleclip.tasks import is_regression
from moleclip.training.applicability import EMBEDDING_DOMAIN_DIR, ApplicabilityDomain, applicability_markdown, \
    applicability_report
from moleclip.training.uncertainty import ConformalIntervals, ProbabilityCalibration, ensemble
from moleclip.training.uncertainty_report import classification_report, regression_report, uncertainty_markdown

__all__ = ["TRUST_FILE", "MEMBER_FILE", "build_trust", "save_members", "save_head_member", "load_head_member",
           "trust_markdown", "interval_columns", "save_embedding_domain"]

TRUST_FILE = "uncertainty.json"
MEMBER_FILE = "member.json"  # a head-only member (frozen mode): its head on the encoder of the folder above


def _stack(members: list[dict], part: str, key: str) -> np.ndarray:
    return np.concatenate([np.asarray(m[key][part]) for m in members])


def build_trust(data, members: list[dict], kept: dict, shared: bool, coverage: float) -> dict:
    """Calibration, domain and their test reports: ``{"calibration", "scope", "domain", "uncertainty",
    "applicability", "test_ensemble"}`` (the last: ensemble mean and spread on the shared test part, else None)."""
    task, names, y = data.task, list(data.target_names), data.targets
    if shared:
        rows = {part: members[0]["_rows"][part] for part in ("valid", "test")}
        ens = {part: ensemble([m["_predictions"][part] for m in members], task,
                              rows=[m["_rows"][part] for m in members]) for part in ("valid", "test")}
        fit_y, fit_mean, fit_spread = y[rows["valid"]], ens["valid"].mean, ens["valid"].spread
        test_y, test_mean, test_spread = y[rows["test"]], ens["test"].mean, ens["test"].spread
        method = "auto"
    else:
        fit_y, fit_mean, fit_spread = y[_stack(members, "valid", "_rows")], _stack(members, "valid", "_predictions"), None
        test_y, test_mean, test_spread = y[_stack(members, "test", "_rows")], _stack(members, "test", "_predictions"), None
        method = "plain"
    if is_regression(task):
        calibration = ConformalIntervals.fit(fit_y, fit_mean, fit_spread, coverage=coverage, method=method,
                                             target_names=names)
        report = regression_report(test_y, test_mean, calibration, spread=test_spread)
    else:
        calibration = ProbabilityCalibration.fit(fit_y, fit_mean, target_names=names)
        report = classification_report(test_y, test_mean, calibration, spread=test_spread)
    report["scope"] = "ensemble" if shared else "members"
    report["n_members"] = len(members)

    bits = _all_bits(data)
    domain = _fit_domain(data, kept, bits)
    test_rows = kept["_rows"]["test"]
    prediction = test_mean if shared else kept["_predictions"]["test"]
    applicability = applicability_report(domain.in_domain(bits[test_rows]), y[test_rows], prediction, task, names,
                                         domain)
    applicability["predictions"] = "ensemble mean" if shared else f"its own predictions, seed {kept['run']['seed']}"
    return {"calibration": calibration, "scope": report["scope"], "domain": domain, "uncertainty": report,
            "applicability": applicability, "test_ensemble": ens["test"] if shared else None}


def _all_bits(data) -> np.ndarray:
    """Morgan bits (radius 2, 2048) of every molecule of the job, the applicability domain's representation."""
    from moleclip.processing.fingerprints import morgan_fingerprints

    result = morgan_fingerprints(data.smiles, radius=2, n_bits=2048, progress=False, n_jobs=1)
    if len(result.kept) != len(data):  # every molecule here was already drawn or fingerprinted once
        raise ValueError(f"Morgan fingerprints failed for {len(data) - len(result.kept)} molecules")
    return result.bits


def _fit_domain(data, kept: dict, bits: np.ndarray) -> ApplicabilityDomain:
    train, valid = kept["_rows"]["train"], kept["_rows"]["valid"]
    return ApplicabilityDomain.fit(bits[train], bits[valid], reference_ids=[data.smiles[i] for i in train],
                                   reference_labels=data.measured[train])


def save_embedding_domain(model_dir: Path, model, processor, data, kept: dict, batch_size: int = 64,
                          device=None) -> dict:
    """The applicability domain in the saved MoleCLIP model's own embedding space: cosine similarity of its
    embeddings to the training molecules', the threshold from the validation molecules' (as for Tanimoto), saved in
    `model_dir/applicability_embedding/`; returns a summary for results.json. A molecule can be near the training
    set in fingerprint terms and far in what the model sees, or the other way round: predict reports both."""
    from moleclip.training.engine import embed
    from moleclip.training.kinds import ImageKind

    rows = {part: np.asarray(kept["_rows"][part]) for part in ("train", "valid")}
    embeddings = {}
    for part, positions in rows.items():
        values, kept_positions, skipped = embed(ImageKind(model, processor), [data.smiles[i] for i in positions],
                                                batch_size=batch_size, device=device, progress=False)
        if skipped:  # every molecule here was drawn for training already
            raise ValueError(f"{len(skipped)} {part} molecules could not be embedded again")
        embeddings[part] = values
    train = rows["train"]
    domain = ApplicabilityDomain.fit(embeddings["train"], embeddings["valid"], metric="cosine",
                                     reference_ids=[data.smiles[i] for i in train],
                                     reference_labels=data.measured[train])
    domain.save(Path(model_dir) / EMBEDDING_DOMAIN_DIR)
    return {"metric": "cosine", "threshold": float(domain.threshold), "n_reference": int(len(train)),
            "folder": EMBEDDING_DOMAIN_DIR}


def save_members(model_dir: Path, members: list[dict], restore, trust: dict, task: str, mode: str) -> dict:
    """Write `model_dir/ensemble/seed_<s>/` (one complete model folder per member, by `restore(member, folder)`),
    `uncertainty.json` (members, calibration and its scope) and the applicability domain; returns what was written."""
    folders = []
    for member in members:
        folder = Path(model_dir) / "ensemble" / f"seed_{member['run']['seed']}"
        restore(member, folder)
        folders.append(folder.relative_to(model_dir).as_posix())
    record = {"version": 1, "task": task, "mode": mode, "members": folders, "scope": trust["scope"],
              "calibration": trust["calibration"].to_dict()}
    (Path(model_dir) / TRUST_FILE).write_text(json.dumps(record, indent=2, allow_nan=True))
    trust["domain"].save(model_dir)
    return {"members": folders, "uncertainty": TRUST_FILE, "applicability": "applicability.json"}


def save_head_member(folder: Path, head_state: dict, scaling) -> None:
    """A frozen-mode member: every seed shares model/'s frozen encoder, so only its head (a few hundred kB, not a
    second copy of the encoder) and its target scaling are written."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in head_state.items()}, str(folder / "head.safetensors"))
    mean, std = scaling.statistics() if scaling is not None else (None, None)
    record = {"version": 1, "kind": "head_on_encoder_of_parent_folder", "target_mean": mean, "target_std": std}
    (folder / MEMBER_FILE).write_text(json.dumps(record, indent=2))


def load_head_member(folder: Path, base):
    """`base` (the model/ folder's MoleCLIP model) with the member's head and target scaling, as a new model that
    shares `base`'s encoder module (the very same frozen weights: one copy in memory, and `Predictor` runs the
    encoder once for all such members)."""
    import copy

    from safetensors.torch import load_file

    folder = Path(folder)
    record = json.loads((folder / MEMBER_FILE).read_text())
    if record.get("kind") != "head_on_encoder_of_parent_folder":
        raise ValueError(f"{folder / MEMBER_FILE}: unknown member kind {record.get('kind')!r}")
    model = copy.deepcopy(base, memo={id(base.moleclip): base.moleclip})
    model.head.load_state_dict(load_file(str(folder / "head.safetensors")))
    if record["target_mean"] is not None:
        model.set_target_scaling(record["target_mean"], record["target_std"])
    return model.eval()


def interval_columns(task: str, names: list[str], calibration, mean: np.ndarray, spread=None) -> dict:
    """Columns for a prediction table: intervals (regression) or calibrated probabilities (classification)."""
    out = {}
    if is_regression(task):
        lower, upper = calibration.intervals(mean, spread)
        for j, name in enumerate(names):
            out[f"predicted_{name}_lower"], out[f"predicted_{name}_upper"] = lower[:, j], upper[:, j]
    else:
        calibrated = calibration.probabilities(mean)
        for j, name in enumerate(names):
            out[f"calibrated_probability_{name}"] = calibrated[:, j]
    return out


def trust_markdown(results: dict) -> list[str]:
    """The uncertainty and applicability sections of results.md."""
    trust = results.get("trust")
    if not trust:
        return []
    u = trust["uncertainty"]
    scope = ("the seeds' models as one ensemble on the shared split" if u["scope"] == "ensemble" else
             "each seed's own model on its own validation and test parts, pooled (the splits differ per seed)")
    lines = ["", "## Uncertainty and applicability domain", "",
             f"{u['n_members']} models (one per seed) kept as an ensemble in `model/ensemble/`; calibrated on "
             f"validation only, from {scope}.", "", uncertainty_markdown(u).rstrip(), "",
             f"Applicability domain, test part of the saved run ({trust['applicability']['predictions']}):", "",
             applicability_markdown(trust["applicability"]).rstrip()]
    return lines
