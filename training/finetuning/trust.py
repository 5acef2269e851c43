"""How far to trust a finetuned model's predictions, built from the chosen setting's runs (one per seed) and saved in
the model folder for `moleclip predict --uncertainty --domain`.

* Ensemble: every seed's model of the chosen setting is kept (`model/ensemble/seed_<s>/`, each a complete folder of
  its mode: MoleCLIP checkpoint, fingerprint MLP or random forest); predict returns their mean and spread. For a random
  forest the members are the seeds' forests (each already an average of trees; the spread is between forests).
* Calibration on validation only (`training/trust/uncertainty.py`; its test reports: `training/trust/report.py`):
  - shared split (every seed has the same validation and test rows: scaffold splits, or a split column with valid
    rows): the members form one ensemble on the same molecules, so intervals / probabilities are calibrated on the
    ensemble mean (and spread: normalised intervals are chosen when cross-validation on validation says they are
    narrower) and tested on the ensemble's test predictions;
  - per-seed splits (random, random_scaffold, or a validation part carved per seed): a molecule in one seed's
    validation part is in another seed's training part, so no ensemble prediction is out-of-sample on any common
    part. Each member's own validation residuals (or logits) are then pooled, plain intervals (one width per target)
    are calibrated on them, and the report pools each member's own test part. Predict applies them around the
    ensemble mean, which is usually at least as accurate as one member: the intervals are then, if anything, wide.
* Applicability domain (`training/trust/applicability.py`): Tanimoto similarity of Morgan bits to the training molecules of
  the saved run (`model/`), threshold from its validation molecules; the report flags that run's test molecules. A
  MoleCLIP model also gets the same in its own embedding space (cosine; `save_embedding_domain`).

Test labels are read only by the reports, never by a fit or a choice.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
from safetensors.torch import save_file

from moleclip.processing.fingerprints import morgan_fingerprints
from moleclip.tasks import is_regression
from moleclip.training.inference.engine import embed
from moleclip.training.kinds import ImageKind
from moleclip.training.serving.hub import load_weights
from moleclip.training.trust.applicability import EMBEDDING_DOMAIN_DIR, ApplicabilityDomain, applicability_markdown, \
    applicability_report
from moleclip.training.trust.uncertainty import ConformalIntervals, ProbabilityCalibration, ensemble
from moleclip.training.trust.report import classification_report, coverage_shortfalls, regression_report, \
    uncertainty_markdown

from .run import Member, _scores

__all__ = ["TRUST_FILE", "MEMBER_FILE", "build_trust", "ensemble_scores", "save_members", "save_head_member",
           "load_head_member", "trust_markdown", "interval_columns", "save_embedding_domain"]

TRUST_FILE = "uncertainty.json"
MEMBER_FILE = "member.json"  # a head-only member (frozen mode): its head on the encoder of the folder above


def _stack(members: list[Member], part: str, key: str) -> np.ndarray:
    return np.concatenate([np.asarray(getattr(m, key)[part]) for m in members])


def build_trust(data, members: list[Member], kept: Member, shared: bool, coverage: float,
                group: np.ndarray | None = None, group_column: str | None = None) -> dict:
    """Calibration, domain and their test reports: ``{"calibration", "scope", "domain", "uncertainty",
    "applicability", "test_ensemble"}`` (the last: ensemble mean and spread on the shared test part, else None), and
    with `group` (the --group-column flags of every row) ``"uncertainty_group"``: the same report on the group's test
    rows, with a warning for each target whose interval coverage there is well below the promised level."""
    task, names, y = data.task, list(data.target_names), data.targets
    if shared:
        rows = {part: members[0].rows[part] for part in ("valid", "test")}
        ens = {part: ensemble([m.predictions[part] for m in members], task,
                              rows=[m.rows[part] for m in members]) for part in ("valid", "test")}
        fit_y, fit_mean, fit_spread = y[rows["valid"]], ens["valid"].mean, ens["valid"].spread
        test_rows, test_mean, test_spread = np.asarray(rows["test"]), ens["test"].mean, ens["test"].spread
        method = "auto"
    else:
        fit_y, fit_mean, fit_spread = y[_stack(members, "valid", "rows")], _stack(members, "valid", "predictions"), None
        test_rows, test_mean, test_spread = _stack(members, "test", "rows"), _stack(members, "test", "predictions"), None
        method = "plain"
    if is_regression(task):
        calibration = ConformalIntervals.fit(fit_y, fit_mean, fit_spread, coverage=coverage, method=method,
                                             target_names=names)
    else:
        calibration = ProbabilityCalibration.fit(fit_y, fit_mean, target_names=names)

    def test_report(inside: np.ndarray) -> dict:
        spread = None if test_spread is None else test_spread[inside]
        make = regression_report if is_regression(task) else classification_report
        out = make(y[test_rows[inside]], test_mean[inside], calibration, spread=spread)
        out["scope"], out["n_members"] = ("ensemble" if shared else "members"), len(members)
        return out

    report = test_report(np.ones(len(test_rows), dtype=bool))
    group_report = None
    if group is not None:
        group_report = test_report(group[test_rows])
        if is_regression(task):
            _warn_about_group_coverage(group_report, group_column)

    bits = _all_bits(data)
    domain = _fit_domain(data, kept, bits)
    test_rows = kept.rows["test"]
    prediction = test_mean if shared else kept.predictions["test"]
    applicability = applicability_report(domain.in_domain(bits[test_rows]), y[test_rows], prediction, task, names,
                                         domain)
    applicability["predictions"] = "ensemble mean" if shared else f"its own predictions, seed {kept.seed}"
    return {"calibration": calibration, "scope": report["scope"], "domain": domain, "uncertainty": report,
            "uncertainty_group": group_report, "applicability": applicability,
            "test_ensemble": ens["test"] if shared else None}


def _warn_about_group_coverage(report: dict, group_column: str | None) -> None:
    """One line per target whose intervals, on the subgroup's test rows, cover well below the promise (activity
    cliffs: 0.46-0.59 for a promised 0.90 on one held-out set): the intervals are calibrated on validation as a
    whole, and a subgroup can be much harder."""
    for name, coverage, n in coverage_shortfalls(report):
        warnings.warn(f"--group-column {group_column}: the {report['target_coverage']:g} prediction intervals of "
                      f"target {name} covered only {coverage:.2f} of the group's {n} test predictions; do not trust "
                      "them on such molecules (results.md, 'Uncertainty and applicability domain')", UserWarning,
                      stacklevel=4)


def ensemble_scores(data, members: list[Member], shared: bool, group: np.ndarray | None = None) -> dict:
    """Test scores of the ensemble that `moleclip predict` serves: the members' test predictions combined by
    `uncertainty.ensemble`, predict's own combiner (mean value; mean probability), scored as each run is. On the test
    part only with a shared split (per-seed splits put one seed's test molecules in another's training part, so the
    ensemble has no held-out test part there: "test" is then None, with a "note"); on an external test file always.
    `group`: the --group-column flags of every row (its test rows are scored apart, as "test_group")."""
    names, out = list(data.target_names), {"n_members": len(members)}
    for part in ("test", "external"):
        if part not in members[0].rows:
            continue
        if part == "test" and not shared:
            out["test"] = None
            out["note"] = ("each seed drew its own split, so a test molecule of one seed is a training molecule of "
                           "another: the ensemble has no held-out test part (a scaffold split or --split-column has one)")
            continue
        rows = np.asarray(members[0].rows[part])
        combined = ensemble([m.predictions[part] for m in members], data.task,
                            rows=[m.rows[part] for m in members])
        out[part] = dict(_scores(data.task, data.targets[rows], combined.mean, names))
        if part == "test" and group is not None:
            inside = group[rows]
            out["test_group"] = {"n": int(inside.sum())}
            if inside.any():
                out["test_group"].update(_scores(data.task, data.targets[rows[inside]], combined.mean[inside], names))
    return out


def _all_bits(data) -> np.ndarray:
    """Morgan bits (radius 2, 2048) of every molecule of the job, the applicability domain's representation."""
    result = morgan_fingerprints(data.smiles, radius=2, n_bits=2048, progress=False, n_jobs=1)
    if len(result.kept) != len(data):  # every molecule here was already drawn or fingerprinted once
        raise ValueError(f"Morgan fingerprints failed for {len(data) - len(result.kept)} molecules")
    return result.bits


def _fit_domain(data, kept: Member, bits: np.ndarray) -> ApplicabilityDomain:
    train, valid = kept.rows["train"], kept.rows["valid"]
    return ApplicabilityDomain.fit(bits[train], bits[valid], reference_ids=[data.smiles[i] for i in train],
                                   reference_labels=data.measured[train])


def save_embedding_domain(model_dir: Path, model, processor, data, kept: Member, batch_size: int = 64,
                          device=None) -> dict:
    """The applicability domain in the saved MoleCLIP model's own embedding space: cosine similarity of its
    embeddings to the training molecules', the threshold from the validation molecules' (as for Tanimoto), saved in
    `model_dir/applicability_embedding/`; returns a summary for results.json. A molecule can be near the training
    set in fingerprint terms and far in what the model sees, or the other way round: predict reports both."""
    rows = {part: np.asarray(kept.rows[part]) for part in ("train", "valid")}
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


def save_members(model_dir: Path, members: list[Member], restore, trust: dict, task: str, mode: str) -> dict:
    """Write `model_dir/ensemble/seed_<s>/` (one complete model folder per member, by `restore(member, folder)`),
    `uncertainty.json` (members, calibration and its scope) and the applicability domain; returns what was written."""
    folders = []
    for member in members:
        folder = Path(model_dir) / "ensemble" / f"seed_{member.seed}"
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
    folder = Path(folder)
    record = json.loads((folder / MEMBER_FILE).read_text())
    if record.get("kind") != "head_on_encoder_of_parent_folder":
        raise ValueError(f"{folder / MEMBER_FILE}: unknown member kind {record.get('kind')!r}")
    model = copy.deepcopy(base, memo={id(base.moleclip): base.moleclip})
    model.head.load_state_dict(load_weights(folder / "head.safetensors"))
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
    group = trust.get("uncertainty_group")
    if group is not None:
        column = results["protocol"].get("group_column")
        lines += ["", f"The same on the test subgroup (rows where `{column}` is true), whose coverage the intervals do "
                  "not promise: they are calibrated on validation as a whole.", "",
                  uncertainty_markdown(group).rstrip()]
    return lines
