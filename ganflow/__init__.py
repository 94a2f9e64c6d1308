"""ganflow: train GANs with PyTorch DDP on Ray. README.md's "Code map" says what each package owns."""
