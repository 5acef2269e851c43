"""Finetuning with the paper's protocol, split by concern.

- `inputs.py`: what a run reads — drawn pictures, frozen embeddings or fingerprints — behind one small protocol.
- `data.py`: the training items those inputs hand to a DataLoader, keyed by (epoch, row) so augmentation is seeded.
- `run.py`: one run (one setting, one seed) through the package's training loop, scored at its best-validation epoch.
- `parts.py`: what a job reads beside molecules and targets (IDs, a split column, a subgroup, an external test file)
  and the per-molecule prediction tables it writes.
- `job.py`: the whole job as named stages: data, features, splits, the grid search on validation, the final runs,
  the results, the trust, the saved model; `records.py`: the records (dataclasses) the stages hand each other;
  `checks.py`: the options and output folder a job refuses before anything is loaded.
- `trust.py`: the chosen setting's seeds as an ensemble, its calibration and applicability domain (validation only).
- `report.py`: what a person reads: results.json / results.md, the model card's protocol text, plots.

The command line is `moleclip finetune` (`cli/finetune.py`); `training/finetune.py` is the same as a script.
"""

from .job import finetune

__all__ = ["finetune"]
