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
import torch

from moleclip import MoleCLIPForPropertyPrediction
from moleclip.processing.molecules import warn_about_fragments
from moleclip.processing.property_data import PropertyDataset, load_property_dataset
from moleclip.processing.splits import canonical_smiles, split_leakage
from moleclip.training.loop import OPTIMIZER_TEXT
from moleclip.training.outputs import check_run_folder, hold_run_folder, write_atomically, write_delimited
from moleclip.training.scoring import TASK_METRICS, higher_is_better
from moleclip.training.search import expand_grid, final_markdown, paper_reference, public_view, run_search, \
    search_markdown, setting_name, summarize_runs, summarize_values
from moleclip.training.uncertainty import probability_logits

from . import report
from .inputs import EmbeddingInputs, FingerprintInputs, ImageInputs
from .parts import job_splits, load_job_rows, prediction_frame, shared_split, truthy
from .run import FinetuneRun, RunKeeper, RunOptions, _scores

__all__ = ["finetune", "check_args"]

# What a job writes in its folder: present before a job starts means another job's results are there.
OUTPUTS = ("results.json", "results.md", "runs", "plots", "model", "predictions.csv")
MODE_LABELS = {"full": "MoleCLIP (this run)", "frozen": "MoleCLIP, frozen encoder (this run)",
               "fingerprint": "FP-MLP baseline (this run)", "random_forest": "Random forest (this run)"}


def check_args(args: argparse.Namespace) -> None:
    """Refuse settings that cannot work together, before anything is loaded."""
    if args.baseline and (args.freeze_encoder or args.init_from or args.r_groups):
        raise ValueError("--baseline uses fingerprints: --freeze-encoder, --init-from and --r-groups do not apply")
    if args.baseline and args.push_to_hub:
        raise ValueError("--push-to-hub shares MoleCLIP models; a fingerprint baseline is not one")
    if args.epochs < 1 or (args.final_epochs is not None and args.final_epochs < 1):
        raise ValueError("--epochs and --final-epochs must be >= 1")
    if args.batch_size < 1 or args.eval_batch_size < 1:
        raise ValueError("batch sizes must be >= 1")
    if any(seed < 0 for seed in args.seeds):
        raise ValueError(f"--seeds must be non-negative integers, got {args.seeds}")
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds has repeats: {args.seeds}")
    if any(v <= 0 for v in args.head_lr + args.encoder_lr):
        raise ValueError("learning rates must be positive")
    # Settings torch or the head accept without a word and then train wrongly: a negative clipping norm reverses
    # every gradient, a negative weight decay pushes weights away from zero, a hidden layer of width 0 makes the head
    # predict one constant for every molecule.
    if any(v < 0 for v in args.weight_decay):
        raise ValueError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if args.max_grad_norm is not None and not args.max_grad_norm > 0:
        raise ValueError(f"--max-grad-norm must be positive (or left out: no clipping), got {args.max_grad_norm}")
    if args.warmup_steps < 0:
        raise ValueError(f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    if args.head_dropout and any(not 0 <= v < 1 for v in args.head_dropout):
        raise ValueError(f"--head-dropout must lie in [0, 1), got {args.head_dropout}")
    if args.head_hidden_size is not None and args.head_hidden_size < 1:
        raise ValueError(f"--head-hidden-size must be >= 1, got {args.head_hidden_size}")
    if args.head_num_layers is not None and args.head_num_layers < 0:
        raise ValueError(f"--head-num-layers must be >= 0 (0: one linear layer), got {args.head_num_layers}")
    if args.frozen_views < 1 or args.rf_estimators < 1:
        raise ValueError("--frozen-views and --rf-estimators must be >= 1")
    if args.init_factor is not None and not args.init_factor > 0:
        raise ValueError(f"--init-factor must be positive, got {args.init_factor}")
    if args.num_workers < 0:
        raise ValueError(f"--num-workers must be >= 0, got {args.num_workers}")
    if args.threads is not None and args.threads < 1:
        raise ValueError("--threads must be >= 1")
    if args.limit is not None and args.limit < 3:
        raise ValueError("--limit must leave at least 3 molecules (one per split part)")
    if not 0 < getattr(args, "coverage", 0.9) < 1:
        raise ValueError(f"--coverage must lie strictly between 0 and 1 (e.g. 0.9), got {args.coverage}")
    if args.init_from and not Path(args.init_from).is_dir():
        raise FileNotFoundError(f"--init-from {args.init_from}: not found (pass the model/ folder a previous "
                                "finetuning wrote)")


def _load_data(args) -> PropertyDataset:
    return load_property_dataset(args.dataset, smiles_column=args.smiles_column, target_columns=args.target_columns,
                                 task=args.task, data_dir=args.data_dir, standardize=args.standardize)


def _build_template(args, data: PropertyDataset) -> tuple[MoleCLIPForPropertyPrediction, object, str]:
    from accelerate.utils import set_seed

    from moleclip.training.hub import describe_backbone, load_backbone, load_processor

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
        from moleclip.processing.molecules import describe_skipped

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
        from moleclip.training.hub import check_push_possible

        check_push_possible(hub_api)  # now, not after the training whose model it would push
    _refuse_foreign_folder(Path(args.output_dir))
    check_run_folder(args.output_dir, OUTPUTS, overwrite=args.overwrite,
                     inputs={"--dataset": args.dataset, "--test-file": args.test_file, "--model": args.model,
                             "--init-from": args.init_from})
    with contextlib.ExitStack() as held:
        return _finetune(args, hub_api, held)


def _refuse_foreign_folder(folder: Path) -> None:
    """`--overwrite` removes a finetune job's outputs, some of which have common names (runs/, plots/, model/): in a
    folder that no finetune job wrote (no results.json, no runs/search or runs/final of an interrupted job) they are
    the user's own, and are not touched."""
    ours = (folder / "results.json").exists() or any((folder / "runs" / phase).is_dir() for phase in ("search", "final"))
    common = [name for name in ("runs", "plots", "model") if (folder / name).exists()]
    if common and not ours:
        raise FileExistsError(f"{folder} holds {', '.join(common)} that no finetune job wrote there: choose another "
                              "--output-dir (a finetune job writes these names and, with --overwrite, removes them)")


def _finetune(args: argparse.Namespace, hub_api, held: contextlib.ExitStack) -> dict:
    from accelerate import Accelerator

    started = time.perf_counter()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    output_dir = Path(args.output_dir)
    acc = Accelerator(cpu=args.cpu, mixed_precision=args.mixed_precision)
    progress = not args.no_progress and acc.is_local_main_process
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

    template, processor, backbone, inputs = None, None, "Morgan fingerprints (radius 2, 2048 bits)", None
    if mode == "random_forest":
        from moleclip.training.baselines import fingerprint_matrix

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
            inputs = EmbeddingInputs(template, processor, data.smiles, args.eval_batch_size, device=acc.device,
                                     progress=progress, views=args.frozen_views, seed=args.backbone_seed)
        else:
            inputs = ImageInputs(template, processor, data.smiles, max_cached=args.max_cached_images,
                                 progress=progress, batch_size=args.eval_batch_size)
        _warn_skipped(inputs.skipped, "drawing")
        kept = inputs.kept
    if len(kept) != len(data):
        rows = rows.subset(kept)
        data = rows.data
    dataset_info["n_used"], dataset_info["n_external_used"] = rows.n_main, len(rows.external)
    if args.test_file and not len(rows.external):
        raise ValueError(f"--test-file {args.test_file}: none of its molecules could be used")
    if acc.is_main_process:  # only now: a job that fails while loading leaves no empty folder behind
        held.enter_context(hold_run_folder(output_dir, OUTPUTS if args.overwrite else ()))

    splits, split_source = job_splits(rows, args, split_kind)
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
        dataset_info["external_in_training"] = overlap
        if overlap:
            warnings.warn(f"--test-file: {overlap} of its molecules are also in a training part (same canonical "
                          "SMILES); their external scores measure memory", UserWarning, stacklevel=2)
    group = truthy(rows.frame[args.group_column], args.group_column) if args.group_column else None
    extra_parts = {"external": rows.external} if len(rows.external) else {}

    def finish_run(run: dict, run_dir: Path) -> dict:
        """Subgroup test scores and the per-molecule prediction files of one run (it still holds its private parts)."""
        if group is not None:
            test_rows = run["_rows"]["test"]
            inside = group[test_rows]
            run["test_group"] = {"n": int(inside.sum())}
            if inside.any():
                run["test_group"].update(_scores(data.task, data.targets[test_rows[inside]],
                                                 run["_predictions"]["test"][inside], data.target_names))
        if acc.is_main_process:
            for part in ("test", *extra_parts):
                frame = prediction_frame(rows, run["_rows"][part], run["_predictions"][part], run["seed"])
                path = run_dir / f"{part}_predictions.csv"
                write_atomically(path, lambda tmp, f=frame: write_delimited(f, tmp))
        return run

    common = dict(args=args, rows=rows, split_kind=split_kind, split_source=split_source, splits=splits,
                  leakage=leakage, dataset_info=dataset_info, output_dir=output_dir, acc=acc, started=started,
                  group=group)
    if mode == "random_forest":
        return _random_forest(bits=bits, finish_run=finish_run, extra_parts=extra_parts, **common)

    grid = _grid(args, mode)
    if mode == "frozen":
        inputs.prepare_views(grid["augmentation"], np.unique(np.concatenate([s.train for s in splits.values()])))
    settings = expand_grid(grid)
    varied = [k for k, v in grid.items() if len(set(v)) > 1]
    options = RunOptions(metric=data.metric, select_on=args.select_on, epochs=args.epochs,
                         batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, num_workers=args.num_workers,
                         optimizer=args.optimizer, max_grad_norm=args.max_grad_norm, scheduler=args.scheduler,
                         warmup_steps=args.warmup_steps, regression_loss=args.regression_loss,
                         progress=progress and len(settings) * len(args.seeds) == 1)

    def search(settings_: list[dict], epochs: int, phase: str) -> tuple[dict, RunKeeper]:
        keeper = RunKeeper(options.select_key, options.select_mode)
        run_options = dataclasses.replace(options, epochs=epochs)

        def train_one(setting: dict, seed: int) -> dict:
            name = setting_name(setting, varied)
            run_dir = output_dir / "runs" / phase / name / f"seed_{seed}"
            run = FinetuneRun(inputs, data, splits[seed], setting, seed, run_options, acc, run_dir,
                              extra_parts=extra_parts).train()
            keeper.offer(name, setting, finish_run(run, run_dir))
            return run

        result = run_search(settings_, args.seeds, train_one, options.select_key, options.select_mode,
                            on_entry=keeper.entry_done, progress=progress, varied=varied)
        return result, keeper

    # Each run ends with accelerate's free_memory(), whose full garbage collection walks every object alive; with
    # torch, transformers and datasets loaded that is seconds per run. Objects alive now live until the end anyway.
    gc.collect()
    gc.freeze()
    threads = torch.get_num_threads()
    if args.threads is None and mode in ("frozen", "fingerprint") and acc.device.type == "cpu":
        torch.set_num_threads(1)  # measured: the ESOL frozen grid runs 5x faster on one thread than on two
    searched, keeper = search(settings, args.epochs, "search")
    chosen = searched["entries"][searched["chosen"]]
    final_runs, kept = chosen["runs"], keeper.leader
    if args.final_epochs:
        final, final_keeper = search([chosen["setting"]], args.final_epochs, "final")
        final_runs, kept = final["entries"][0]["runs"], final_keeper.leader
    final_summary = summarize_runs(final_runs)
    from .trust import ensemble_scores

    served = ensemble_scores(data, kept["members"], shared_split(splits), group)
    gc.unfreeze()
    torch.set_num_threads(threads)

    metrics = list(TASK_METRICS[data.task])
    results = {
        "dataset": dataset_info,
        "mode": mode,
        "backbone": backbone,
        "model": args.model if mode != "fingerprint" else None,
        "init_from": args.init_from,
        "protocol": {
            "split": split_kind, "split_source": split_source, "fractions": list(args.fractions),
            "seeds": list(args.seeds), "epochs": args.epochs, "final_epochs": args.final_epochs,
            "batch_size": args.batch_size,
            "optimizer": f"{OPTIMIZER_TEXT[args.optimizer]}; {report.BETAS_TEXT}",
            "scheduler": args.scheduler, "select_on": args.select_on, "select_key": f"valid_{options.select_key}",
            "select_mode": options.select_mode,
            "selection": report.selection_text(data.task, data.n_targets, options.select_key, args.regression_loss),
            "standardized_targets": data.task == "regression",
            "r_groups": bool(args.r_groups), "frozen_views": args.frozen_views if mode == "frozen" else None,
            "regression_loss": args.regression_loss if data.task == "regression" else None,
            "grid": grid, "split_sizes": {str(s): list(v.sizes) for s, v in splits.items()},
            "leakage": {str(s): {k: v for k, v in found.items() if k != "examples"} for s, found in leakage.items()},
            "group_column": args.group_column,
        },
        "search": searched,
        "chosen_setting": chosen["setting"],
        "chosen_name": chosen["name"],
        "final": {"runs": final_runs, "summary": final_summary, "ensemble": served, **_part_summaries(final_runs)},
        "paper": _paper_row(args, data),
        "processes": acc.num_processes,
        "device": str(acc.device),
    }
    results["final_table"] = final_markdown(final_summary, metrics, MODE_LABELS[mode], results["paper"], data.metric,
                                            split=split_kind, ensemble=served)
    results["search_table"] = search_markdown(searched, options.select_key, data.metric)
    if acc.is_main_process:
        trust = _add_trust(results, rows, kept, splits, args.coverage, group)
        _save(args, results, rows, inputs, kept, processor, backbone, split_kind, grid, options, mode, output_dir,
              started, hub_api, trust)
    acc.wait_for_everyone()
    return public_view(results)


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


def _combined_predictions(output_dir: Path, rows, members: list[dict], trust: dict | None = None) -> str:
    """predictions.csv: every seed's test predictions of the chosen setting, one block per seed, and with a shared
    split the ensemble's (seed "ensemble"); each interval (or calibrated probability) sits on the prediction it was
    calibrated for: the ensemble's on a shared split, each member's on per-seed splits."""
    import pandas as pd

    from .trust import interval_columns

    data = rows.data
    names = list(data.target_names)
    frames = []
    for m in members:
        pred = m["_predictions"]["test"]
        extra = None
        if trust is not None and trust["scope"] == "members":
            extra = interval_columns(data.task, names, trust["calibration"], pred)
        frames.append(prediction_frame(rows, m["_rows"]["test"], pred, m["run"]["seed"], extra))
    if trust is not None and trust["scope"] == "ensemble":
        ens = trust["test_ensemble"]
        prefix = "probability" if data.task == "classification" else "predicted"
        extra = {f"{prefix}_{name}_spread": ens.spread[:, j] for j, name in enumerate(names)}
        extra.update(interval_columns(data.task, names, trust["calibration"], ens.mean, ens.spread))
        frames.append(prediction_frame(rows, members[0]["_rows"]["test"], ens.mean, "ensemble", extra))
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[[c for c in frame.columns if c != "seed"] + ["seed"]]  # the ensemble's own columns come after it
    write_atomically(output_dir / "predictions.csv", lambda tmp: write_delimited(frame, tmp))
    return str(output_dir / "predictions.csv")


def _add_trust(results: dict, rows, kept: dict, splits: dict, coverage: float, group=None) -> dict:
    """Ensemble calibration and applicability domain from the chosen setting's runs (validation only); their test
    reports (and the --group-column rows' report) go into results["trust"]."""
    from .trust import build_trust

    trust = build_trust(rows.data, kept["members"], kept, shared_split(splits), coverage, group,
                        results["protocol"].get("group_column"))
    results["trust"] = {"scope": trust["scope"], "coverage": coverage, "uncertainty": trust["uncertainty"],
                        "applicability": trust["applicability"]}
    if trust["uncertainty_group"] is not None:
        results["trust"]["uncertainty_group"] = trust["uncertainty_group"]
    return trust


def _save(args, results, rows, inputs, kept, processor, backbone, split_kind, grid, options, mode, output_dir,
          started, hub_api, trust) -> None:
    """Write the chosen model, its ensemble, calibration and domain, plots and results (main process only)."""
    from .trust import save_head_member, save_members

    data = rows.data
    model_dir = output_dir / "model"
    saved = inputs.restore(kept["_state"], kept["setting"])
    if data.task == "regression":
        saved.set_target_scaling(kept["_target_scaling"])  # a MoleCLIP model keeps it in its config, not weights
    if mode == "fingerprint":
        saved.save(model_dir)
    results["saved_model"] = {"dir": str(model_dir), "setting": kept["setting"], "seed": kept["run"]["seed"],
                              "best_epoch": kept["run"]["best_epoch"], "valid": kept["run"]["valid"],
                              "test": kept["run"]["test"]}
    results["predictions"] = _combined_predictions(output_dir, rows, kept["members"], trust)
    if not args.no_plots:
        results["plots"] = report.write_plots(output_dir, rows, kept, data.metric, results["search"]["varied"],
                                              args.regression_loss)
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    markdown = report.results_markdown(results, data)
    report.write_results(output_dir, results, markdown)
    kind, card = report.model_card(args, data, rows.n_main, results, mode,
                                   report.protocol_text(args, data, split_kind, mode, grid, options), options.select_key,
                                   backbone, model_dir)
    extra_files = {"results.json": (output_dir / "results.json").read_text(), "results.md": markdown}
    from moleclip.training.hub import push_model_dir, save_model_dir, write_model_card

    if mode == "fingerprint":
        write_model_card(model_dir, kind, card, extra_files)
    else:
        save_model_dir(model_dir, saved, processor, card=card, extra_files=extra_files)
        from .trust import save_embedding_domain

        results["saved_model"]["embedding_domain"] = save_embedding_domain(
            model_dir, saved, processor, data, kept, batch_size=args.eval_batch_size,
            device="cpu" if args.cpu else None)
    del saved

    def restore(member: dict, folder: Path) -> None:
        if mode == "frozen":  # the encoder is model/'s, untouched by training: keep only each seed's head
            save_head_member(folder, member["_state"], member["_target_scaling"] if data.task == "regression" else None)
            return
        model = inputs.restore(member["_state"], member["setting"])
        if data.task == "regression":
            model.set_target_scaling(member["_target_scaling"])
        if mode == "fingerprint":
            model.save(folder)
        else:
            model.save_pretrained(folder)
            processor.save_pretrained(folder)

    results["saved_model"]["trust"] = save_members(model_dir, kept["members"], restore, trust, data.task, mode)
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
    from moleclip.processing.property_data import DATASETS

    key = str(args.dataset).strip().lower()
    spec = DATASETS.get(key)
    if spec is None or Path(str(args.dataset)).expanduser().is_file():
        return None
    if list(data.target_names) != list(spec.target_columns):
        return None
    return paper_reference(key, args.data_dir)


def _random_forest(args, rows, bits, split_kind, split_source, splits, leakage, dataset_info, output_dir, acc, started,
                   group, finish_run, extra_parts) -> dict:
    """One forest per seed on the same splits; hyperparameters fixed in advance (no search), so validation is only
    reported. The forests are saved (model/ holds the seed best on validation) like every other mode's models."""
    from moleclip.training.baselines import FP_RADIUS, ForestPredictor

    data = rows.data
    setting = {"n_estimators": args.rf_estimators}
    name = f"n_estimators={args.rf_estimators}"
    members = []
    for seed, split in splits.items():
        forest = ForestPredictor.fit(data.task, bits[split.train], data.targets[split.train], seed,
                                     n_estimators=args.rf_estimators, target_names=data.target_names,
                                     radius=FP_RADIUS, standardize=args.standardize,
                                     smiles_column=args.smiles_column)
        parts = {"valid": split.valid, "test": split.test, **extra_parts}
        raw = {part: forest.predict(bits[idx]) for part, idx in parts.items()}
        run = {"seed": seed, **{part: dict(_scores(data.task, data.targets[idx], raw[part], data.target_names))
                                for part, idx in parts.items()}, "split_sizes": list(split.sizes),
               "_predictions": {part: probability_logits(v) if data.task == "classification" else v
                               for part, v in raw.items()},
               "_rows": {"train": split.train, **parts}, "_forest": forest}
        run = finish_run(run, output_dir / "runs" / "search" / name / f"seed_{seed}")
        members.append({"run": {k: v for k, v in run.items() if not k.startswith("_")}, "setting": setting,
                        "name": name, **{k: v for k, v in run.items() if k.startswith("_")}})
    runs = [m["run"] for m in members]
    summary = summarize_runs(runs)
    from .trust import ensemble_scores

    served = ensemble_scores(data, members, shared_split(splits), group)
    searched = {"entries": [{"setting": setting, "name": name, "runs": runs, "summary": summary}], "chosen": 0,
                "varied": [], "selected_by": "fixed hyperparameters (no search)"}
    results = {
        "dataset": dataset_info, "mode": "random_forest", "backbone": "Morgan fingerprints (radius 2, 2048 bits)",
        "protocol": {"split": split_kind, "split_source": split_source, "fractions": list(args.fractions),
                     "seeds": list(args.seeds), "epochs": None, "final_epochs": None,
                     "select_key": "none (fixed hyperparameters)", "n_estimators": args.rf_estimators,
                     "split_sizes": {str(s): list(v.sizes) for s, v in splits.items()},
                     "group_column": args.group_column},
        "search": searched, "chosen_setting": setting, "chosen_name": name,
        "final": {"runs": runs, "summary": summary, "ensemble": served, **_part_summaries(runs)},
        "paper": _paper_row(args, data),
    }
    metrics = list(TASK_METRICS[data.task])
    results["final_table"] = final_markdown(summary, metrics, MODE_LABELS["random_forest"], results["paper"],
                                            data.metric, split=split_kind, ensemble=served)
    results["search_table"] = search_markdown(searched, data.metric, data.metric)
    if acc.is_main_process:
        key = data.metric
        sign = 1 if higher_is_better(key) else -1

        def rank(member: dict) -> float:
            value = member["run"]["valid"].get(key, float("nan"))
            return sign * value if np.isfinite(value) else -np.inf  # an undefined score never wins

        best = max(members, key=rank)
        model_dir = output_dir / "model"
        best["_forest"].save(model_dir)
        results["saved_model"] = {"dir": str(model_dir), "setting": setting, "seed": best["run"]["seed"],
                                  "valid": best["run"]["valid"], "test": best["run"]["test"],
                                  "chosen_by": f"validation {key} among the seeds' forests"}
        best["members"] = members
        trust = _add_trust(results, rows, best, splits, args.coverage, group)
        from .trust import save_members

        results["saved_model"]["trust"] = save_members(model_dir, members, lambda m, f: m["_forest"].save(f), trust,
                                                       data.task, "random_forest")
        results["predictions"] = _combined_predictions(output_dir, rows, members, trust)
        results["wall_seconds"] = round(time.perf_counter() - started, 1)
        markdown = report.results_markdown(results, data)
        report.write_results(output_dir, results, markdown)
        protocol = (f"{split_source}, seeds {', '.join(map(str, args.seeds))}; one random forest of "
                    f"{args.rf_estimators} trees per seed (scikit-learn's defaults otherwise), fixed in advance")
        from moleclip.training.hub import write_model_card

        write_model_card(model_dir, *report.model_card(args, data, rows.n_main, results, "random_forest", protocol,
                                                       key, results["backbone"], model_dir),
                         {"results.json": (output_dir / "results.json").read_text(), "results.md": markdown})
        print(markdown)
    return public_view(results)
