"""Generator/discriminator pairs by registry name; each entry declares what it needs (images or 2D
points, class labels). Models are single-device; DDP wraps them in ganflow.ray.worker.

Every generator has `nz` (latent size) and `num_classes` (labels it takes; 0: unconditional), and
is called as `G(z, y)`; every discriminator as `D(x, y)` (y ignored when unconditional).
"""

from ganflow.models import dcgan, mlp, r3gan, resnet, stylegan2  # noqa: F401  (registering the built-in models)
from ganflow.models.registry import MODELS, ModelSpec, build_models, generator_classes, register, spec

__all__ = ["MODELS", "ModelSpec", "build_models", "generator_classes", "register", "spec"]
