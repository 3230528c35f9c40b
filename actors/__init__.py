"""Model roles (T2I, LLM, VLM, captioner, CLIP scorer): plain classes that load and run a
model, thin Ray actor shells around them, cross-caller batching and the offline model kit.

Nothing here loads a model, probes a device or starts Ray at import time."""
