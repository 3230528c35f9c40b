"""Evaluation of reverse prompts (thesis §4.3): metrics, prompt sources, the comparison run.

``python -m agents.evaluate`` is the command; see docs/evaluation.md.
"""
