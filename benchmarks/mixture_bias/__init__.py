"""Exact-metric miniature of the exposure-bias benchmark (issue #13 item 4): Gaussian mixtures in 2-D and
16-D, an MLP ε(/ξ) denoiser, every training strategy over several training seeds, exact NLL and sliced W2
as a function of sampler steps. DRAFT: see docs/mixture_bias_draft.md."""
