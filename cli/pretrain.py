"""Continued pretraining of a MoleCLIP encoder on pictures of molecules (the paper's objective and optimiser).

    moleclip pretrain --input chembl_labels.parquet --backbone openai/clip-vit-base-patch16 \\
        --output-dir runs/moleclip --batch-size 256 --epochs 4 --mixed-precision bf16 --resume latest
    accelerate launch training/pretrain.py ...      # the same options, on every GPU or process

Objective: a symmetric contrastive loss between a plain and a randomly styled, augmented drawing of each molecule
(negatives from the global batch), plus one cross-entropy per K-means pseudo-label set of MACCS keys (--k, computed on
the fly when the input has no label_k<K> columns); --tasks classification or contrastive trains one of them alone.
Batches: groups of --group-size molecules of one fine class (shuffled molecules for the contrastive task alone).
Optimiser: torch.optim.Adam with L2 weight decay (0.1 on the encoder, lr 5e-6; classifiers lr 0.01, no decay), betas
(0.9, 0.98), eps 1e-6, no gradient clipping, constant schedule: the paper's. --optimizer adamw for decoupled decay.

Writes <output-dir>/pretrain_config.json, metrics.csv, checkpoints/step_N (every --save-every steps and the last
step; --resume latest continues a killed run at the exact step), training_results.json, and model/: the final
checkpoint folder (weights, config, image processor, remote code, model card), which --push-to-hub uploads.
"""

from __future__ import annotations

NAME = "pretrain"
HELP = "continued pretraining of an encoder: contrastive + pseudo-label classification (one process; see accelerate)"
# The options are the fields of the library's PretrainConfig, whose import brings the model package: main.py adds
# them only when this command is chosen, so that the other commands' --help stays quick.
OPTIONS_FROM_PACKAGE = True


def add_arguments(parser) -> None:
    from moleclip.training.pretraining.config import PretrainConfig

    PretrainConfig.add_arguments(parser)


def run(args) -> int:
    from moleclip.training.pretraining.config import PretrainConfig
    from moleclip.training.pretraining.run import pretrain

    summary = pretrain(PretrainConfig.from_namespace(args))
    if summary:
        print(f"{summary['steps']} optimizer steps; model in {summary['model_dir']}")
    return 0
