"""Exposure-bias benchmark (thesis §3.3): pretrain a DDPM on Fashion-MNIST, fine-tune copies with DDPM, IP,
SS, SDSS, MDSS (several k) and the DDIM-based variants under one budget, and score DDPM / DDIM /
DPM-Solver samples with and without ε-scaling. ``python -m benchmarks.exposure_bias --help``."""
