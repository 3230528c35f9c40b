"""LLM and VLM roles: one ``chat`` interface over three backends (vLLM, transformers, OpenAI-compatible).

``server.LLMServer`` / ``server.VLMServer`` are what Ray runs; ``cfg.backend`` picks the
backend. Nothing heavy is imported here.
"""
