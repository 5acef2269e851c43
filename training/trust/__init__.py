"""How far to trust a prediction: ensembles, conformal intervals and calibration fitted on validation, their reports on test, and the applicability domain."""
