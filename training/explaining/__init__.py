"""Explanations: attributions pooled onto atoms (the maths) and the explainers with their pictures."""
