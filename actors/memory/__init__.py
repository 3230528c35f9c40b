"""GPU memory plan of the model roles, from model configs alone: no weights are read or loaded.

For every actor group (actors/role_groups.py: one actor per role, or one shared by the LLM,
the VLM and a VLM captioner) that runs on a GPU, the plan adds up

* **weights**: the parameter count × bytes per parameter. Parameters are counted by building
  the model from its config on PyTorch's ``meta`` device (``accelerate.init_empty_weights``),
  which allocates nothing, and summing ``numel``; a 4-bit AWQ/GPTQ model's linear layers
  count 4 bits plus their group scales and zero points.
* **KV cache**: for a vLLM engine, what is left of its budget. vLLM takes
  ``gpu_memory_utilization × the whole GPU's memory`` (a fraction of the *whole* GPU, not of
  what is free, and not of the actor's ``num_gpus``), puts the weights and activations in it
  and gives the rest to the KV cache. The ceiling it could use is
  2 × layers × KV heads × head dim × bytes × max_num_seqs × max_model_len; it must at
  least hold one ``max_model_len`` sequence, or vLLM refuses to start.
* **activations** (an estimate, marked ``~``): the peak of a forward pass at the configured
  batch and image size (formulas in needs.py), and a CUDA context for each process outside vLLM.

Then it places the actors' replicas on the GPUs as Ray packs fractional ``num_gpus`` (best
fit, in start order: an assumption for more than one GPU; on one GPU there is no choice)
and compares each GPU's sum with its memory. Two tiers of problems:

* **certain**: weights and vLLM budgets alone do not fit (a GPU overflows, or an engine's
  budget cannot hold its weights and one full sequence). The batch job refuses to start.
* **estimated**: they fit only without the activation and CUDA-context estimates. The
  planner CLI (``python -m actors.plan``) exits non-zero; the batch job logs a warning.

Model configs are read from a local folder, the Hugging Face cache or the hub (config files
only), else from the built-in table of actors/known_models.py (said so in the plan).

The modules, each importing only those above it:

* ``sizes``: byte units, ``parse_size`` ("24GiB"), ``fmt`` / ``fmt_params``, ``SizingError``.
* ``model_configs``: ``ConfigReader``, a model's config files from a local folder, the Hugging Face
  cache, the hub (through actors/hub_probe.py) or the built-in table.
* ``counting``: parameters and weight bytes of a model built from its config on the meta device
  (quantised linear layers, T5's tied embedding counted once, persistent buffers counted).
* ``needs``: what one actor group takes on its GPU (``GroupNeed``, ``group_need``): weights, KV cache,
  activations and CUDA context per role, with the estimate constants.
* ``placement``: replicas onto GPUs as Ray packs fractional ``num_gpus`` (``place``).
* ``sections``: a batch profile's role sections, validated (``role_sections``).
* ``plan``: the plan (``MemoryPlan``, ``make_plan``, ``plan_problems``) and its table (``format_plan``).
* ``startup_check``: the batch job's start-up check (``gpu_memory_check``, ``local_gpu_memory``).

The CLI is actors/plan.py (``python -m actors.plan``, ``expectdiff-plan``).
"""
