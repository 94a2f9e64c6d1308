"""`ganflow sweep`: Ray Tune over ganflow jobs. spec (the typed sweep file, checked against the
job's own validation), trial (one Tune trial driving its own TorchTrainer), tune (searchers,
schedulers, the Tuner), results (per-trial rows, best.yaml)."""
