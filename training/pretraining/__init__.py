"""Pretraining: its settings (`PretrainConfig`), the input table and pseudo-labels, and the run."""
