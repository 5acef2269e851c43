"""MoleCLIP training: the shared accelerate loop, pretraining, finetuning, evaluation and the command line."""
