"""ganflow: train GANs with PyTorch DDP on Ray. README.md's "Code map" says what each package owns."""


def __getattr__(name: str):
    if name == "__version__":  # from the installed package's metadata, read when asked (the CLI starts faster)
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("ganflow")
        except PackageNotFoundError:  # a source tree that was never installed
            return "0+unknown"
    raise AttributeError(f"module 'ganflow' has no attribute {name!r}")
