"""One finetuning run: one setting of the grid, one seed, through the package's training loop.

After every epoch the run scores validation and test (loss and metrics) and logs both, so the learning curves show
them side by side; the best epoch is chosen on the validation value alone (`select_key`), and the run reports the
test scores of that epoch. Nothing about the test set ever enters a choice.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from moleclip.property_head import TargetScaling, loss_from_predictions
from moleclip.training.samplers import EpochBatches
from moleclip.processing.property_data import PropertyDataset
from moleclip.processing.splits import Split
from moleclip.tasks import is_regression
from moleclip.training.loop import LoopSettings, TrainingLoop, build_optimizer, build_scheduler
from moleclip.training.samplers import ShuffledBatchSampler
from moleclip.training.evaluation.scoring import TASK_METRICS, compute_metrics, higher_is_better

__all__ = ["RunOptions", "FinetuneRun", "Member", "ChosenRuns", "RunKeeper"]


@dataclass
class RunOptions:
    """What stays fixed across the runs of one finetuning job (the grid varies the rest)."""

    metric: str
    select_on: str = "loss"
    epochs: int = 60
    batch_size: int = 64
    eval_batch_size: int = 128
    num_workers: int = 0
    optimizer: str = "adam"
    max_grad_norm: float | None = None
    scheduler: str = "constant"
    warmup_steps: int = 0
    regression_loss: str = "l1"
    progress: bool = True

    @property
    def select_key(self) -> str:
        return "loss" if self.select_on == "loss" else self.metric

    @property
    def select_mode(self) -> str:
        return "min" if self.select_on == "loss" else ("max" if higher_is_better(self.metric) else "min")


@dataclass
class Member:
    """One run (a setting, a seed) as the job keeps it: `run`, what results.json reports of it, and what only the job
    uses: the best epoch's weights, its predictions and rows per part ("train", "valid", "test", and "external" with
    --test-file), the target scaling of a regression, or the fitted estimator of the random-forest or SVM baseline."""

    run: dict
    setting: dict
    name: str
    rows: dict[str, np.ndarray]
    predictions: dict[str, np.ndarray]
    weights: dict | None = None
    target_scaling: TargetScaling | None = None
    estimator: object = None

    @property
    def seed(self) -> int:
        return self.run["seed"]


@dataclass
class ChosenRuns:
    """Every seed's run of one setting (in seed order: the ensemble) and the best of them on validation (model/)."""

    best: Member
    members: list[Member] = field(default_factory=list)


def _scores(task: str, labels: np.ndarray, pred: np.ndarray, target_names):
    """The task's metrics (a `MetricReport`: means, and per target with the targets left out and why)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a one-class validation task would warn every epoch; the report says why
        return compute_metrics(task, labels, pred, target_names)


class FinetuneRun:
    """Trains `inputs.new_model(setting)` on the split's training rows with `seed`; see :meth:`train`."""

    def __init__(self, inputs, data: PropertyDataset, split: Split, setting: dict, seed: int, options: RunOptions,
                 accelerator, run_dir: Path, extra_parts: dict | None = None, name: str = ""):
        self.inputs, self.data, self.split, self.setting, self.seed = inputs, data, split, setting, int(seed)
        self.name = name  # the setting's name in the job's tables and folders
        # e.g. {"external": rows}: scored every epoch like test and reported at the best-validation epoch; never chosen on
        self.extra_parts = dict(extra_parts or {})
        self.options, self.acc, self.run_dir = options, accelerator, Path(run_dir)
        self.select = f"valid_{options.select_key}"
        self.best: dict | None = None
        self._last_reports: dict = {}

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def _predict(self, rows: np.ndarray) -> np.ndarray:
        self.model.eval()
        outputs = []
        for batch in self.inputs.eval_batches(rows, self.options.eval_batch_size):
            batch = {k: v.to(self.acc.device) for k, v in batch.items()}
            with self.acc.autocast():
                outputs.append(self.model(**batch).logits.float().cpu().numpy())
        return np.concatenate(outputs) if outputs else np.zeros((0, self.data.n_targets), dtype=np.float32)

    def _score_part(self, part: str, rows: np.ndarray) -> tuple[dict, np.ndarray]:
        pred = self._predict(rows)
        y = self.data.targets[rows]
        record = {f"{part}_loss": loss_from_predictions(pred, y, self.data.task, self.options.regression_loss,
                                                        self.scaling)}
        scores = _scores(self.data.task, y, pred, self.data.target_names)
        self._last_reports[part] = scores
        record.update({f"{part}_{k}": v for k, v in scores.items()})
        return record, pred

    def _evaluate(self, _prepared) -> dict:
        train_seconds = time.perf_counter() - self._clock
        started = time.perf_counter()
        valid, valid_pred = self._score_part("valid", self.split.valid)
        test, test_pred = self._score_part("test", self.split.test)
        self._last_predictions = {"valid": valid_pred, "test": test_pred}
        extra = {}
        for part, rows in self.extra_parts.items():
            scores, self._last_predictions[part] = self._score_part(part, rows)
            extra.update(scores)
        record = {**valid, **test, **extra, "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - started}
        self._clock = time.perf_counter()
        return record

    def _on_best(self, _prepared, record: dict) -> None:
        # Called by the loop when `select_key` (a validation value) improves; test values ride along, unread.
        self.best = {"state": self.inputs.best_state(self.model), "record": dict(record),
                     "predictions": {k: v.copy() for k, v in self._last_predictions.items()},
                     "reports": dict(self._last_reports)}

    # ------------------------------------------------------------------ the run
    def train(self) -> Member:
        """Train; the member's record is ``{"seed", "best_epoch", "valid": {...}, "test": {...}, ...}``, with the best
        epoch's weights and predictions."""
        acc, options, data = self.acc, self.options, self.data
        started = time.perf_counter()
        if acc.is_main_process and (self.run_dir / "metrics.csv").exists():
            (self.run_dir / "metrics.csv").unlink()  # the loop appends; a rerun into the same folder must start clean
        acc.wait_for_everyone()
        set_seed(self.seed)
        train_rows = self.split.train
        self.model = self.inputs.new_model(self.setting)
        if is_regression(data.task):
            self.scaling = TargetScaling.from_labels(data.targets[train_rows])
            self.model.set_target_scaling(self.scaling)
        else:
            self.scaling = TargetScaling.identity(data.n_targets)
        optimizer = build_optimizer(self.inputs.param_groups(self.model, self.setting), kind=options.optimizer)
        sampler = EpochBatches(ShuffledBatchSampler(len(train_rows), options.batch_size, seed=self.seed,
                                                    drop_last=False, num_replicas=acc.num_processes,
                                                    rank=acc.process_index))
        dataset = self.inputs.train_dataset(train_rows, data.targets[train_rows], self.setting["augmentation"], self.seed)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=options.num_workers,
                            collate_fn=self.inputs.collate, persistent_workers=options.num_workers > 0,
                            pin_memory=acc.device.type == "cuda")
        steps = options.epochs * len(sampler)
        scheduler = build_scheduler(optimizer, options.scheduler, options.warmup_steps, steps)
        settings = LoopSettings(output_dir=str(self.run_dir), max_steps=steps, max_grad_norm=options.max_grad_norm,
                                log_every=len(sampler), eval_each_epoch=True, select_key=self.select,
                                select_mode=options.select_mode, progress=options.progress)
        self._clock = time.perf_counter()
        loop = TrainingLoop(acc, self.model, optimizer, loader, settings, scheduler=scheduler,
                            evaluate=self._evaluate, on_best=self._on_best)
        state = loop.run()
        if self.best is None:
            # Every validation value was NaN (e.g. ROC-AUC on a one-class validation set): report the last epoch.
            warnings.warn(f"validation {options.select_key} was never finite for {self.setting} seed {self.seed}; "
                          "reporting the last epoch", UserWarning, stacklevel=2)
            self._on_best(None, state.history[-1])
        record = self.best["record"]
        names = ["loss", *TASK_METRICS[data.task]]
        extra = {part: {k: float(record[f"{part}_{k}"]) for k in names} for part in self.extra_parts}
        run = {
            "seed": self.seed,
            "best_epoch": int(record["epoch"]),
            "epochs": options.epochs,
            "valid": {k: float(record[f"valid_{k}"]) for k in names},
            "test": {k: float(record[f"test_{k}"]) for k in names},
            **extra,
            # per target, and which targets a metric left out of its mean and why (e.g. one class in that part)
            "per_target": {part: report.per_task for part, report in self.best["reports"].items()},
            "left_out": {part: report.left_out for part, report in self.best["reports"].items()},
            "seconds": round(time.perf_counter() - started, 2),
            "train_seconds_per_epoch": float(np.mean([r["train_seconds"] for r in state.history])),
            "split_sizes": list(self.split.sizes),
            "metrics_csv": str(self.run_dir / "metrics.csv"),
        }
        member = Member(run, dict(self.setting), self.name,
                        rows={"train": self.split.train, "valid": self.split.valid, "test": self.split.test,
                              **self.extra_parts},
                        predictions=self.best["predictions"], weights=self.best["state"], target_scaling=self.scaling)
        acc.free_memory()
        del loop, self.model
        return member


class RunKeeper:
    """Keeps, for the setting being trained and for the leading setting only, every seed's `Member` (weights,
    best-epoch predictions, rows): the seeds of the chosen setting become the ensemble, and a long grid never holds
    more than two settings' models in memory. ``leader`` is the leading setting's `ChosenRuns`."""

    def __init__(self, key: str, mode: str):
        self.key, self.mode = key, mode
        self.candidates: dict[str, ChosenRuns] = {}
        self.leader: ChosenRuns | None = None

    def _better(self, a: dict, b: dict | None) -> bool:
        if b is None:
            return True
        va, vb = a["valid"][self.key], b["valid"][self.key]
        if not math.isfinite(vb):
            return math.isfinite(va)
        return math.isfinite(va) and (va < vb if self.mode == "min" else va > vb)

    def offer(self, member: Member) -> None:
        entry = self.candidates.get(member.name)
        if entry is None:
            self.candidates[member.name] = ChosenRuns(member, [member])
            return
        entry.members.append(member)
        if self._better(member.run, entry.best.run):
            entry.best = member

    def entry_done(self, entry: dict, is_leader: bool) -> None:
        candidate = self.candidates.pop(entry["name"], None)
        if is_leader and candidate is not None:
            self.leader = candidate
