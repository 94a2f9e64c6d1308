"""Weights & Biases: settings resolved and checked before Ray starts, the rank-0 tracker, artifacts
by reference (and back to their checkpoints), W&B's own run files read offline, dashboards."""
