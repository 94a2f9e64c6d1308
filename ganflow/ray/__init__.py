"""Ray plumbing: cluster start-up and worker hooks, the driver (TorchTrainer) and the worker (which
wraps core.fit), actor pools for synth and score, signal handling, the Jobs API client.

Kept free of torch at import time: `ganflow.ray.hooks` runs in every Ray worker before Ray sets its
thread count."""
