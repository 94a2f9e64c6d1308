"""Pure torch: random streams, losses and penalties, DiffAugment, EMA, the GAN step, the training
state, sampling, and the Ray-free `fit` loop. Imports nothing of ganflow but the config."""
