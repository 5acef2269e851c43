"""Scoring and reporting: metrics, the grid search and its summaries over seeds, and the figures."""
