"""A whole finetuning job with the paper's protocol (the `moleclip finetune` command runs `finetune(args)`).

The dataset is split once per seed (scaffold splits are deterministic, so seeds then vary only the model); every
setting of the grid (head learning rate x augmentation preset x encoder learning rate x weight decay x head dropout)
is trained once per seed (`run.FinetuneRun`); a run reports its test scores at its best-validation epoch; settings
are compared on their mean validation value only, and the chosen setting's runs (or fresh `--final-epochs` runs)
make the final table. The best run of the chosen setting is saved as a complete checkpoint folder
(`<output-dir>/model`) with plots and results; every seed's model of that setting is kept beside it as an ensemble
(`model/ensemble/seed_<s>/`) with its calibration and applicability domain (`trust.py`: fitted on validation only).

Splits come from `--split` per seed, or fixed from `--split-column` (`parts.py`); `--test-file` rows join the data set
after the main rows, are scored every epoch like test and reported apart, and are never in any split part.

The options and the output folder are checked first (`checks.py`). A job is then a sequence of named stages handing
each other the records of `records.py`: `_start` (`Job`), `_read_molecules` (`Molecules`), `_build_features`
(`Features`), `_make_splits` (`Splits`), `_train` (`Training`: search and final runs, each run a `run.Member`),
`_results`, `_add_trust` (ensemble, calibration, domain) and `_save`; the random-forest and SVM baselines'
`_bits_baseline` takes the place of the last four.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from moleclip import MoleCLIPForPropertyPrediction
from moleclip.processing.molecules import describe_skipped, warn_about_fragments
from moleclip.processing.property_data import DATASETS, PropertyDataset, load_property_dataset
from moleclip.processing.splits import canonical_smiles, split_leakage
from moleclip.tasks import get_task, is_classification, is_regression, prediction_prefix
from moleclip.training.kinds.baselines import FP_RADIUS, ForestPredictor, fingerprint_matrix
from moleclip.training.kinds.svm import SVMPredictor
from moleclip.training.loop import OPTIMIZER_TEXT
from moleclip.training.outputs import check_run_folder, hold_run_folder, write_atomically, write_delimited
from moleclip.training.evaluation.scoring import TASK_METRICS, higher_is_better
from moleclip.training.evaluation.search import expand_grid, final_markdown, paper_reference, public_view, run_search, \
    search_markdown, setting_name, summarize_runs, summarize_values
from moleclip.training.serving.hub import (
    check_push_possible,
    describe_backbone,
    load_backbone,
    load_processor,
    push_model_dir,
    save_model_dir,
    write_model_card,
)
from moleclip.training.trust.uncertainty import probability_logits

from . import report
from .checks import check_args, refuse_foreign_folder
from .inputs import EmbeddingInputs, FingerprintInputs, ImageInputs
from .parts import job_splits, load_job_rows, prediction_frame, shared_split, truthy
from .records import Features, Job, Molecules, Splits, Training
from .run import ChosenRuns, FinetuneRun, Member, RunKeeper, RunOptions, _scores
from .trust import build_trust, ensemble_scores, interval_columns, save_embedding_domain, save_head_member, \
    save_members

__all__ = ["finetune"]

# What a job writes in its folder: present before a job starts means another job's results are there.
OUTPUTS = ("results.json", "results.md", "runs", "plots", "model", "predictions.csv")
MODE_LABELS = {"full": "MoleCLIP (this run)", "frozen": "MoleCLIP, frozen encoder (this run)",
               "fingerprint": "FP-MLP baseline (this run)", "random_forest": "Random forest (this run)",
               "svr": "Tanimoto SVM (this run)"}


def _load_data(args) -> PropertyDataset:
    return load_property_dataset(args.dataset, smiles_column=args.smiles_column, target_columns=args.target_columns,
                                 task=args.task, data_dir=args.data_dir, standardize=args.standardize)


def _build_template(args, data: PropertyDataset) -> tuple[MoleCLIPForPropertyPrediction, object, str]:
    overrides = dict(task=data.task, num_targets=data.n_targets, target_names=list(data.target_names),
                     smiles_column=args.smiles_column, regression_loss=args.regression_loss, target_mean=None,
                     target_std=None)
    if args.head_hidden_size is not None:
        overrides["head_hidden_size"] = args.head_hidden_size
    if args.head_num_layers is not None:
        overrides["head_num_layers"] = args.head_num_layers
    source = args.init_from or args.model
    set_seed(args.backbone_seed)
    template = load_backbone(source, MoleCLIPForPropertyPrediction, init_factor=args.init_factor, **overrides)
    template.float()
    processor = load_processor(source, r_groups=True) if args.r_groups else load_processor(source)
    processor.augmentation = "none"  # the saved processor is for inference; training augments explicitly
    processor.standardize = args.standardize  # saved: predict prepares new molecules as these were prepared
    backbone = describe_backbone(args.model)
    if args.init_from:
        backbone = f"the encoder of `{args.init_from}` (a MoleCLIP model finetuned before: domain-focused pretraining)"
    return template, processor, backbone


def _warn_skipped(skipped, what: str) -> None:
    if skipped:
        warnings.warn(f"{what}: {describe_skipped(skipped)}; these molecules are left out", UserWarning, stacklevel=2)


def _grid(args, mode: str) -> dict:
    grid = {"head_lr": args.head_lr, "augmentation": args.augmentation}
    if mode == "full":
        grid["encoder_lr"] = args.encoder_lr
    grid["weight_decay"] = args.weight_decay
    if args.head_dropout:
        grid["head_dropout"] = args.head_dropout
    if mode == "fingerprint":
        grid["augmentation"] = ["none"]  # fingerprints have no pictures to augment
    return grid


def finetune(args: argparse.Namespace, hub_api=None) -> dict:
    """Run the whole job described by parsed command-line `args`; returns the results (as written to results.json).

    One job per output folder: a folder holding another job's results is refused unless `args.overwrite` (they are
    then removed before the new ones are written), and a lock keeps a second process out while this one writes.
    """
    check_args(args)
    if args.push_to_hub:
        check_push_possible(hub_api)  # now, not after the training whose model it would push
    refuse_foreign_folder(Path(args.output_dir))
    check_run_folder(args.output_dir, OUTPUTS, overwrite=args.overwrite,
                     inputs={"--dataset": args.dataset, "--test-file": args.test_file, "--model": args.model,
                             "--init-from": args.init_from})
    with contextlib.ExitStack() as held:
        return _finetune(args, hub_api, held)


def _finetune(args: argparse.Namespace, hub_api, held: contextlib.ExitStack) -> dict:
    job = _start(args)
    molecules = _read_molecules(job)
    molecules, features = _build_features(job, molecules)
    if job.acc.is_main_process:  # only now: a job that fails while loading leaves no empty folder behind
        held.enter_context(hold_run_folder(job.output_dir, OUTPUTS if args.overwrite else ()))
    splits = _make_splits(job, molecules)
    if molecules.mode in ("random_forest", "svr"):
        return _bits_baseline(job, molecules, features.bits, splits)
    training = _train(job, molecules, features, splits)
    results = _results(job, molecules, features, splits, training)
    if job.acc.is_main_process:
        trust = _add_trust(results, molecules.rows, training.kept, splits, args.coverage)
        _save(job, results, molecules, features, training, hub_api, trust)
    job.acc.wait_for_everyone()
    return public_view(results)


def _start(args) -> Job:
    started = time.perf_counter()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    acc = Accelerator(cpu=args.cpu, mixed_precision=args.mixed_precision)
    return Job(args, acc, Path(args.output_dir), not args.no_progress and acc.is_local_main_process, started)


def _read_molecules(job: Job) -> Molecules:
    args = job.args
    rows = load_job_rows(args, lambda: _load_data(args))
    data = rows.data
    warn_about_fragments(data.smiles, str(data.source or data.name))
    split_kind = args.split or data.default_split
    mode = args.baseline or ("frozen" if args.freeze_encoder else "full")
    dataset_info = {"name": data.name, "source": str(data.source) if data.source else None, "task": data.task,
                    "targets": list(data.target_names), "n_molecules": rows.n_main, "metric": data.metric,
                    "standardize": data.standardize, "n_standardized": data.n_standardized,
                    "skipped_rows": [{"line": s.line, "smiles": s.smiles, "reason": s.reason} for s in data.skipped],
                    "test_file": args.test_file, "n_external": len(rows.external)}
    return Molecules(rows, mode, split_kind, dataset_info)


def _build_features(job: Job, molecules: Molecules) -> tuple[Molecules, Features]:
    """The mode's inputs, and the molecules they could be made of (those that cannot be drawn or fingerprinted are
    left out, with a warning)."""
    args, data, mode, progress = job.args, molecules.data, molecules.mode, job.progress
    processor, backbone, inputs, bits = None, "Morgan fingerprints (radius 2, 2048 bits)", None, None
    if mode in ("random_forest", "svr"):
        bits, kept = fingerprint_matrix(data, progress=progress)
    elif mode == "fingerprint":
        inputs = FingerprintInputs(data.smiles, data.task, data.target_names, args.regression_loss,
                                   hidden_size=args.head_hidden_size or 512, num_layers=args.head_num_layers or 3,
                                   progress=progress, standardize=args.standardize, smiles_column=args.smiles_column)
        _warn_skipped(inputs.skipped, "Morgan fingerprints")
        kept = inputs.kept
    else:
        template, processor, backbone = _build_template(args, data)
        if mode == "frozen":
            inputs = EmbeddingInputs(template, processor, data.smiles, args.eval_batch_size, device=job.acc.device,
                                     progress=progress, views=args.frozen_views, seed=args.backbone_seed)
        else:
            inputs = ImageInputs(template, processor, data.smiles, max_cached=args.max_cached_images,
                                 progress=progress, batch_size=args.eval_batch_size)
        _warn_skipped(inputs.skipped, "drawing")
        kept = inputs.kept
    rows = molecules.rows
    if len(kept) != len(data):
        rows = rows.subset(kept)
    info = molecules.dataset_info
    info["n_used"], info["n_external_used"] = rows.n_main, len(rows.external)
    if args.test_file and not len(rows.external):
        raise ValueError(f"--test-file {args.test_file}: none of its molecules could be used")
    return dataclasses.replace(molecules, rows=rows), Features(inputs, processor, backbone, bits)


def _make_splits(job: Job, molecules: Molecules) -> Splits:
    """Each seed's split, refused when a part is empty; warnings for molecules in both training and test parts."""
    args, rows, data = job.args, molecules.rows, molecules.data
    splits, split_source = job_splits(rows, args, molecules.split_kind)
    for seed, split in splits.items():
        if min(split.sizes) == 0:
            raise ValueError(f"the {split_source} of {rows.n_main} molecules with seed {seed} leaves a part empty "
                             f"(sizes {split.sizes}); use more molecules or other --fractions")
    canonical = canonical_smiles(data.smiles)
    main = canonical[:rows.n_main]
    leakage = {seed: split_leakage(main, data.targets[:rows.n_main], split) for seed, split in splits.items()}
    _warn_about_leakage(leakage)
    if len(rows.external):
        trained_on = {main[i] for split in splits.values() for i in split.train}
        overlap = sum(canonical[i] in trained_on for i in rows.external)
        molecules.dataset_info["external_in_training"] = overlap
        if overlap:
            warnings.warn(f"--test-file: {overlap} of its molecules are also in a training part (same canonical "
                          "SMILES); their external scores measure memory", UserWarning, stacklevel=2)
    group = truthy(rows.frame[args.group_column], args.group_column) if args.group_column else None
    extra_parts = {"external": rows.external} if len(rows.external) else {}
    return Splits(splits, split_source, leakage, group, extra_parts)


def _finish_run(job: Job, molecules: Molecules, splits: Splits, member: Member, run_dir: Path) -> None:
    """Subgroup test scores and the per-molecule prediction files of one run."""
    data, run = molecules.data, member.run
    if splits.group is not None:
        test_rows = member.rows["test"]
        inside = splits.group[test_rows]
        run["test_group"] = {"n": int(inside.sum())}
        if inside.any():
            run["test_group"].update(_scores(data.task, data.targets[test_rows[inside]],
                                             member.predictions["test"][inside], data.target_names))
    if job.acc.is_main_process:
        for part in ("test", *splits.extra_parts):
            frame = prediction_frame(molecules.rows, member.rows[part], member.predictions[part], run["seed"])
            path = run_dir / f"{part}_predictions.csv"
            write_atomically(path, lambda tmp, f=frame: write_delimited(f, tmp))


def _train(job: Job, molecules: Molecules, features: Features, splits: Splits) -> Training:
    """The grid search over seeds, the setting chosen on validation, and its final runs."""
    args, data, mode = job.args, molecules.data, molecules.mode
    grid = _grid(args, mode)
    if mode == "frozen":
        features.inputs.prepare_views(grid["augmentation"],
                                      np.unique(np.concatenate([s.train for s in splits.by_seed.values()])))
    settings = expand_grid(grid)
    options = RunOptions(metric=data.metric, select_on=args.select_on, epochs=args.epochs,
                         batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, num_workers=args.num_workers,
                         optimizer=args.optimizer, max_grad_norm=args.max_grad_norm, scheduler=args.scheduler,
                         warmup_steps=args.warmup_steps, regression_loss=args.regression_loss,
                         progress=job.progress and len(settings) * len(args.seeds) == 1)
    varied = [k for k, v in grid.items() if len(set(v)) > 1]
    # Each run ends with accelerate's free_memory(), whose full garbage collection walks every object alive; with
    # torch, transformers and datasets loaded that is seconds per run. Objects alive now live until the end anyway.
    gc.collect()
    gc.freeze()
    threads = torch.get_num_threads()
    if args.threads is None and mode in ("frozen", "fingerprint") and job.acc.device.type == "cpu":
        torch.set_num_threads(1)  # measured: the ESOL frozen grid runs 5x faster on one thread than on two
    searched, keeper = _run_phase(job, molecules, features, splits, options, varied, settings, "search")
    chosen = searched["entries"][searched["chosen"]]
    final_runs, kept = chosen["runs"], keeper.leader
    if args.final_epochs:
        final, final_keeper = _run_phase(job, molecules, features, splits,
                                         dataclasses.replace(options, epochs=args.final_epochs), varied,
                                         [chosen["setting"]], "final")
        final_runs, kept = final["entries"][0]["runs"], final_keeper.leader
    gc.unfreeze()
    torch.set_num_threads(threads)
    return Training(grid, options, searched, chosen, final_runs, kept)


def _run_phase(job: Job, molecules: Molecules, features: Features, splits: Splits, options: RunOptions,
               varied: list[str], settings: list[dict], phase: str) -> tuple[dict, RunKeeper]:
    """Trains each setting once per seed (the search, or the final runs); the keeper holds the leading setting's."""
    keeper = RunKeeper(options.select_key, options.select_mode)

    def train_one(setting: dict, seed: int) -> dict:
        name = setting_name(setting, varied)
        run_dir = job.output_dir / "runs" / phase / name / f"seed_{seed}"
        member = FinetuneRun(features.inputs, molecules.data, splits.by_seed[seed], setting, seed, options, job.acc,
                             run_dir, extra_parts=splits.extra_parts, name=name).train()
        _finish_run(job, molecules, splits, member, run_dir)
        keeper.offer(member)
        return dict(member.run)

    result = run_search(settings, job.args.seeds, train_one, options.select_key, options.select_mode,
                        on_entry=keeper.entry_done, progress=job.progress, varied=varied)
    return result, keeper


def _results(job: Job, molecules: Molecules, features: Features, splits: Splits, training: Training) -> dict:
    """results.json (less what saving adds: the saved model, predictions, plots, trust, time)."""
    args, data, mode, options = job.args, molecules.data, molecules.mode, training.options
    chosen, final_runs = training.chosen, training.final_runs
    final_summary = summarize_runs(final_runs)
    served = ensemble_scores(data, training.kept.members, shared_split(splits.by_seed), splits.group)
    metrics = list(TASK_METRICS[data.task])
    results = {
        "dataset": molecules.dataset_info,
        "mode": mode,
        "backbone": features.backbone,
        "model": args.model if mode != "fingerprint" else None,
        "init_from": args.init_from,
        "protocol": {
            "split": molecules.split_kind, "split_source": splits.source, "fractions": list(args.fractions),
            "seeds": list(args.seeds), "epochs": args.epochs, "final_epochs": args.final_epochs,
            "batch_size": args.batch_size,
            "optimizer": f"{OPTIMIZER_TEXT[args.optimizer]}; {report.BETAS_TEXT}",
            "scheduler": args.scheduler, "select_on": args.select_on, "select_key": f"valid_{options.select_key}",
            "select_mode": options.select_mode,
            "selection": report.selection_text(data.task, data.n_targets, options.select_key, args.regression_loss),
            "standardized_targets": get_task(data.task).standardized_targets,
            "r_groups": bool(args.r_groups), "frozen_views": args.frozen_views if mode == "frozen" else None,
            "regression_loss": args.regression_loss if is_regression(data.task) else None,
            "grid": training.grid, "split_sizes": {str(s): list(v.sizes) for s, v in splits.by_seed.items()},
            "leakage": {str(s): {k: v for k, v in found.items() if k != "examples"}
                        for s, found in splits.leakage.items()},
            "group_column": args.group_column,
        },
        "search": training.searched,
        "chosen_setting": chosen["setting"],
        "chosen_name": chosen["name"],
        "final": {"runs": final_runs, "summary": final_summary, "ensemble": served, **_part_summaries(final_runs)},
        "paper": _paper_row(args, data),
        "processes": job.acc.num_processes,
        "device": str(job.acc.device),
    }
    results["final_table"] = final_markdown(final_summary, metrics, MODE_LABELS[mode], results["paper"], data.metric,
                                            split=molecules.split_kind, ensemble=served)
    results["search_table"] = search_markdown(training.searched, options.select_key, data.metric)
    return results


def _warn_about_leakage(leakage: dict) -> None:
    """At most two lines, whatever the number of seeds: labels that disagree are the table's (the same count for
    every seed), and a test part's overlap with training is listed per seed in one line (a scaffold split, shared by
    every seed, printed the same line once per seed)."""
    first = next(iter(leakage.values()))
    if first["conflicting"]:
        warnings.warn(f"{first['conflicting']} structure(s) appear more than once in the table with different labels "
                      "(same canonical SMILES): no prediction can match both copies; deduplicate the table",
                      UserWarning, stacklevel=3)
    overlap = {seed: found for seed, found in leakage.items() if found["train_test"]}
    if overlap:
        counts = {found["train_test"] for found in overlap.values()}
        if len(overlap) == len(leakage) and len(counts) == 1:
            where = f"{counts.pop()} test molecule(s) are also in the training part with every split seed"
        else:
            where = "test molecules are also in the training part: " + ", ".join(
                f"{found['train_test']} with split seed {seed}" for seed, found in overlap.items())
        examples = ", ".join(list(dict.fromkeys(e for found in overlap.values() for e in found["examples"]))[:3])
        warnings.warn(f"{where} (same canonical SMILES, e.g. {examples}); their scores measure memory, not "
                      "prediction: deduplicate the table", UserWarning, stacklevel=3)


def _part_summaries(runs: list[dict]) -> dict:
    """Mean ± std over seeds of the external test scores and the subgroup test scores, where the job has them."""
    out = {}
    for part, key in (("external", "external_summary"), ("test_group", "group_summary")):
        if any(part in run for run in runs):
            # from every run: a seed whose test part holds no row of the subgroup has no scores, only its n of 0
            names = list(dict.fromkeys(k for run in runs for k in run.get(part, {}) if k != "n"))
            out[key] = {k: summarize_values([run.get(part, {}).get(k, float("nan")) for run in runs]) for k in names}
            if part == "test_group":
                out[key]["n"] = [run[part]["n"] for run in runs]
    return out


def _combined_predictions(output_dir: Path, rows, members: list[Member], trust: dict | None = None) -> str:
    """predictions.csv: every seed's test predictions of the chosen setting, one block per seed, and with a shared
    split the ensemble's (seed "ensemble"); each interval (or calibrated probability) sits on the prediction it was
    calibrated for: the ensemble's on a shared split, each member's on per-seed splits."""
    data = rows.data
    names = list(data.target_names)
    frames = []
    for m in members:
        pred = m.predictions["test"]
        extra = None
        if trust is not None and trust["scope"] == "members":
            extra = interval_columns(data.task, names, trust["calibration"], pred)
        frames.append(prediction_frame(rows, m.rows["test"], pred, m.seed, extra))
    if trust is not None and trust["scope"] == "ensemble":
        ens = trust["test_ensemble"]
        prefix = prediction_prefix(data.task)
        extra = {f"{prefix}_{name}_spread": ens.spread[:, j] for j, name in enumerate(names)}
        extra.update(interval_columns(data.task, names, trust["calibration"], ens.mean, ens.spread))
        frames.append(prediction_frame(rows, members[0].rows["test"], ens.mean, "ensemble", extra))
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[[c for c in frame.columns if c != "seed"] + ["seed"]]  # the ensemble's own columns come after it
    write_atomically(output_dir / "predictions.csv", lambda tmp: write_delimited(frame, tmp))
    return str(output_dir / "predictions.csv")


def _add_trust(results: dict, rows, kept: ChosenRuns, splits: Splits, coverage: float) -> dict:
    """Ensemble calibration and applicability domain from the chosen setting's runs (validation only); their test
    reports (and the --group-column rows' report) go into results["trust"]."""
    trust = build_trust(rows.data, kept.members, kept.best, shared_split(splits.by_seed), coverage, splits.group,
                        results["protocol"].get("group_column"))
    results["trust"] = {"scope": trust["scope"], "coverage": coverage, "uncertainty": trust["uncertainty"],
                        "applicability": trust["applicability"]}
    if trust["uncertainty_group"] is not None:
        results["trust"]["uncertainty_group"] = trust["uncertainty_group"]
    return trust


def _save(job: Job, results: dict, molecules: Molecules, features: Features, training: Training, hub_api,
          trust: dict) -> None:
    """Write the chosen model, its ensemble, calibration and domain, plots and results (main process only)."""
    args, output_dir, mode, rows, data = job.args, job.output_dir, molecules.mode, molecules.rows, molecules.data
    inputs, processor, best = features.inputs, features.processor, training.kept.best
    model_dir = output_dir / "model"
    saved = inputs.restore(best.weights, best.setting)
    if is_regression(data.task):
        saved.set_target_scaling(best.target_scaling)  # a MoleCLIP model keeps it in its config, not weights
    if mode == "fingerprint":
        saved.save(model_dir)
    results["saved_model"] = {"dir": str(model_dir), "setting": best.setting, "seed": best.seed,
                              "best_epoch": best.run["best_epoch"], "valid": best.run["valid"],
                              "test": best.run["test"]}
    results["predictions"] = _combined_predictions(output_dir, rows, training.kept.members, trust)
    if not args.no_plots:
        results["plots"] = report.write_plots(output_dir, rows, best, data.metric, results["search"]["varied"],
                                              args.regression_loss)
    results["wall_seconds"] = round(time.perf_counter() - job.started, 1)
    markdown = report.results_markdown(results, data)
    report.write_results(output_dir, results, markdown)
    kind, card = report.model_card(args, data, rows.n_main, results, mode,
                                   report.protocol_text(args, data, molecules.split_kind, mode, training.grid,
                                                        training.options),
                                   training.options.select_key, features.backbone, model_dir)
    extra_files = {"results.json": (output_dir / "results.json").read_text(), "results.md": markdown}
    if mode == "fingerprint":
        write_model_card(model_dir, kind, card, extra_files)
    else:
        save_model_dir(model_dir, saved, processor, card=card, extra_files=extra_files)
        results["saved_model"]["embedding_domain"] = save_embedding_domain(
            model_dir, saved, processor, data, best, batch_size=args.eval_batch_size,
            device="cpu" if args.cpu else None)
    del saved

    def restore(member: Member, folder: Path) -> None:
        if mode == "frozen":  # the encoder is model/'s, untouched by training: keep only each seed's head
            save_head_member(folder, member.weights, member.target_scaling if is_regression(data.task) else None)
            return
        model = inputs.restore(member.weights, member.setting)
        if is_regression(data.task):
            model.set_target_scaling(member.target_scaling)
        if mode == "fingerprint":
            model.save(folder)
        else:
            model.save_pretrained(folder)
            processor.save_pretrained(folder)

    results["saved_model"]["trust"] = save_members(model_dir, training.kept.members, restore, trust, data.task, mode)
    report.write_results(output_dir, results, markdown)
    if args.push_to_hub:  # after the ensemble, calibration and domain are in the folder (baselines are never pushed)
        results["hub_commit"] = push_model_dir(model_dir, args.push_to_hub, private=args.hub_private or None,
                                               api=hub_api)
        report.write_results(output_dir, results, markdown)
    print(markdown)


def _paper_row(args, data) -> dict | None:
    """The paper's row for this job, only where it measured the same thing: a set named from the registry (a user's
    own file called esol.csv is another table) with the registry's target columns (not `nhcs --target-columns` of one
    of them). The table then shows it only on the paper's split kind (`final_markdown(split=...)`)."""
    key = str(args.dataset).strip().lower()
    spec = DATASETS.get(key)
    if spec is None or Path(str(args.dataset)).expanduser().is_file():
        return None
    if list(data.target_names) != list(spec.target_columns):
        return None
    return paper_reference(key, args.data_dir)


def _bits_baseline(job: Job, molecules: Molecules, bits: np.ndarray, splits: Splits) -> dict:
    """One random forest (hyperparameters fixed in advance) or Tanimoto SVM (C chosen per target on validation) per
    seed on the same splits; test never enters a choice. The models are saved (model/ holds the seed best on
    validation) like every other mode's models."""
    args, rows, data, output_dir, acc = job.args, molecules.rows, molecules.data, job.output_dir, job.acc
    split_kind, mode = molecules.split_kind, molecules.mode
    if mode == "svr":
        setting = {"C": list(args.svr_c)}
        name = "C=" + ",".join(f"{c:g}" for c in args.svr_c)
        selected_by = f"C chosen per target and seed on validation {data.metric} only"
    else:
        setting = {"n_estimators": args.rf_estimators}
        name = f"n_estimators={args.rf_estimators}"
        selected_by = "fixed hyperparameters (no search)"
    members = []
    for seed, split in splits.by_seed.items():
        facts = dict(target_names=data.target_names, radius=FP_RADIUS, standardize=args.standardize,
                     smiles_column=args.smiles_column)
        if mode == "svr":
            model = SVMPredictor.fit(data.task, bits[split.train], data.targets[split.train], bits[split.valid],
                                     data.targets[split.valid], data.metric, seed, c_grid=args.svr_c, **facts)
        else:
            model = ForestPredictor.fit(data.task, bits[split.train], data.targets[split.train], seed,
                                        n_estimators=args.rf_estimators, **facts)
        parts = {"valid": split.valid, "test": split.test, **splits.extra_parts}
        raw = {part: model.predict(bits[idx]) for part, idx in parts.items()}
        run = {"seed": seed, **{part: dict(_scores(data.task, data.targets[idx], raw[part], data.target_names))
                                for part, idx in parts.items()}, "split_sizes": list(split.sizes)}
        if mode == "svr":
            run["chosen_C"] = model.chosen_c
        member = Member(run, setting, name, rows={"train": split.train, **parts}, estimator=model,
                        predictions={part: probability_logits(v) if is_classification(data.task) else v
                                     for part, v in raw.items()})
        _finish_run(job, molecules, splits, member, output_dir / "runs" / "search" / name / f"seed_{seed}")
        members.append(member)
    runs = [m.run for m in members]
    summary = summarize_runs(runs)
    served = ensemble_scores(data, members, shared_split(splits.by_seed), splits.group)
    searched = {"entries": [{"setting": setting, "name": name, "runs": runs, "summary": summary}], "chosen": 0,
                "varied": [], "selected_by": selected_by}
    results = {
        "dataset": molecules.dataset_info, "mode": mode,
        "backbone": "Morgan fingerprints (radius 2, 2048 bits)",
        "protocol": {"split": split_kind, "split_source": splits.source, "fractions": list(args.fractions),
                     "seeds": list(args.seeds), "epochs": None, "final_epochs": None,
                     "select_key": selected_by if mode == "svr" else "none (fixed hyperparameters)",
                     **({"c_grid": list(args.svr_c)} if mode == "svr" else {"n_estimators": args.rf_estimators}),
                     "split_sizes": {str(s): list(v.sizes) for s, v in splits.by_seed.items()},
                     "group_column": args.group_column},
        "search": searched, "chosen_setting": setting, "chosen_name": name,
        "final": {"runs": runs, "summary": summary, "ensemble": served, **_part_summaries(runs)},
        "paper": _paper_row(args, data),
    }
    metrics = list(TASK_METRICS[data.task])
    results["final_table"] = final_markdown(summary, metrics, MODE_LABELS[mode], results["paper"],
                                            data.metric, split=split_kind, ensemble=served)
    results["search_table"] = search_markdown(searched, data.metric, data.metric)
    if acc.is_main_process:
        key = data.metric
        sign = 1 if higher_is_better(key) else -1

        def rank(member: Member) -> float:
            value = member.run["valid"].get(key, float("nan"))
            return sign * value if np.isfinite(value) else -np.inf  # an undefined score never wins

        best = max(members, key=rank)
        model_dir = output_dir / "model"
        best.estimator.save(model_dir)
        results["saved_model"] = {"dir": str(model_dir), "setting": setting, "seed": best.seed,
                                  "valid": best.run["valid"], "test": best.run["test"],
                                  "chosen_by": f"validation {key} among the seeds' models"}
        trust = _add_trust(results, rows, ChosenRuns(best, members), splits, args.coverage)
        results["saved_model"]["trust"] = save_members(model_dir, members, lambda m, f: m.estimator.save(f), trust,
                                                       data.task, mode)
        results["predictions"] = _combined_predictions(output_dir, rows, members, trust)
        results["wall_seconds"] = round(time.perf_counter() - job.started, 1)
        markdown = report.results_markdown(results, data)
        report.write_results(output_dir, results, markdown)
        protocol = f"{splits.source}, seeds {', '.join(map(str, args.seeds))}; " + (
            f"one Tanimoto-kernel SVM per target and seed, C from {name[2:]} chosen on validation {data.metric}"
            if mode == "svr" else f"one random forest of {args.rf_estimators} trees per seed (scikit-learn's defaults "
            "otherwise), fixed in advance")
        write_model_card(model_dir, *report.model_card(args, data, rows.n_main, results, mode, protocol,
                                                       key, results["backbone"], model_dir),
                         {"results.json": (output_dir / "results.json").read_text(), "results.md": markdown})
        print(markdown)
    return public_view(results)
