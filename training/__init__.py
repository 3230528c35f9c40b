"""MDSS training: diffusion math (diffusion, schedules, rollout), strategies, the ξ head, samplers.

Submodules are imported explicitly (``from training.strategies import build_strategy``); importing
the package loads nothing heavy.
"""
