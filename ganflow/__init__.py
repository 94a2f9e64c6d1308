"""ganflow: train GANs with PyTorch DDP on Ray. docs/design.md's "Code map" says what each package owns.

From Python: `ganflow.load_generator(location) -> Generator` (`.sample(n, labels, seed, truncation)`),
`ganflow.train(job, **overrides) -> run location`, `ganflow.runs(location) -> [RunRecord]`
(ganflow/api.py). They are imported when first used: the CLI does not pay for torch until it needs it.
"""

API = ("load_generator", "train", "runs", "Generator", "RunRecord")
__all__ = list(API)


def __getattr__(name: str):
    if name in API:
        from ganflow import api

        return getattr(api, name)
    if name == "__version__":  # from the installed package's metadata, read when asked (the CLI starts faster)
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("ganflow")
        except PackageNotFoundError:  # a source tree that was never installed
            return "0+unknown"
    raise AttributeError(f"module 'ganflow' has no attribute {name!r}")
