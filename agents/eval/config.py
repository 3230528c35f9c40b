"""Config of ``python -m agents.evaluate``: the ARPO job's config plus the metric
backbones and the evaluation settings.

``EvalConfig`` extends ``agents.config.ArpoConfig``, so a batch-job profile is also a
valid evaluation profile (the extra sections have defaults) and the evaluation uses the
very T2I, CLIP, captioner and VLM the optimisation used.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from actors.config import LLMConfig, ResourceConfig, VLMConfig
from actors.image_embedder import ImageEmbedderConfig
from agents.config import ArpoConfig
from agents.eval.interrogator import InterrogatorConfig
from core.config import StrictModel
from core.tracking import TrackingConfig

DEFAULT_VLM_INSTRUCTION = (
    "Describe this image in detail: the subjects, their appearance and actions, the background, "
    "the composition, the colours, the lighting and the artistic style or medium."
)


class ArpoVariant(StrictModel):
    """One ARPO row of the table: a framework and a VLM/LLM combination, and where its results are."""

    label: Optional[str] = Field(None, description="Row label in the table; None: 'ARPO (<vlm>, <llm>)' from the model names (and the framework when not enhanced).")
    results_dir: Optional[str] = Field(None, description="Batch output folder (agents.batch_reverse --out) holding this variant's results.jsonl; None: <evaluation out>/arpo/<variant name>.")
    framework: Optional[Literal["vanilla", "enhanced"]] = Field(None, description="Prompt-generation framework; None: agent.framework.")
    llm: Optional[LLMConfig] = Field(None, description="LLM for this variant; None: the top-level llm section.")
    vlm: Optional[VLMConfig] = Field(None, description="VLM for this variant; None: the top-level vlm section.")
    run_missing: bool = Field(True, description="Run the batch job for images without a finished result in results_dir (False: such images count as missing for this method).")


class EvaluationConfig(StrictModel):
    """What to compare and how (thesis §4.3)."""

    methods: list[str] = Field(default_factory=lambda: ["arpo", "blip2", "vlm", "clip_interrogator"], min_length=1,
                               description="Prompt sources, in table order: 'arpo' (the config's own agent and roles), 'arpo:<name>' (an arpo_variants entry, or 'vanilla'/'enhanced' for the framework alone), 'blip2' (the captioner's caption), 'vlm' (the VLM's long description), 'clip_interrogator', 'file:<path>' (a CSV of hand-crafted prompts: columns image,prompt). --methods overrides.")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1, description="Generation seeds: every prompt is rendered once per seed and the image metrics are reported as mean ± std over seeds.")
    out_dir: str = Field("outputs/eval", description="Where records, images, the table, the gallery and the curve go; --out overrides.")
    arpo_results: Optional[str] = Field(None, description="Batch output folder with the results of method 'arpo' (e.g. the --out of an earlier agents.batch_reverse run); None: <out_dir>/arpo/default. --arpo-results overrides.")
    run_missing_arpo: bool = Field(True, description="Method 'arpo': run the batch job for images without a finished result.")
    arpo_variants: dict[str, ArpoVariant] = Field(default_factory=dict, description="Named ARPO variants for methods 'arpo:<name>'.")
    vlm_instruction: str = Field(DEFAULT_VLM_INSTRUCTION, min_length=1, description="What the 'vlm' method asks the VLM about the reference image (a long description, as with GPT-4V / LLaVA in the thesis).")
    interrogator: InterrogatorConfig = Field(default_factory=InterrogatorConfig, description="The CLIP-Interrogator baseline.")
    method_labels: dict[str, str] = Field(default_factory=dict, description="Table labels by method name, overriding the defaults (e.g. {'file:hand.csv': 'Hand-crafted'}).")
    table_images: Literal["common", "each"] = Field("common", description="common: every row averages over the images all methods finished (like with like); each: a row uses every image its method finished.")
    curve: Literal["recorded", "all_metrics"] = Field("recorded", description="Figure 4.7 data for ARPO methods: 'recorded' plots CLIP-T and CLIP-I as the agent recorded them at each step (no extra generation); 'all_metrics' also renders the best prompt after each step at the evaluation seeds and scores all four metrics.")
    concurrency: int = Field(32, ge=1, description="(image, method) evaluations in flight at once; the actors batch across them.")
    gallery_seed: Optional[int] = Field(None, description="Which seed's recreated image the gallery shows; None: the first of seeds.")
    tracking: TrackingConfig = Field(default_factory=lambda: TrackingConfig(enabled=False, experiment="expectdiff-evaluation"), description="MLflow tracking of the evaluation (off by default: the table is in the output folder): the settings and models as params, every table cell as a metric (<method>.<metric>.mean/.std), the table, gallery and curve as artifacts. With uri None, a SQLite store mlflow.db in the output folder; the same output folder continues the same MLflow run.")

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        if any(s < 0 for s in v):
            raise ValueError("seeds must be non-negative")
        return v


def _dino_default() -> ImageEmbedderConfig:
    return ImageEmbedderConfig(model="facebook/dino-vits16", resources=ResourceConfig(num_gpus=0.1))


def _vit_default() -> ImageEmbedderConfig:
    return ImageEmbedderConfig(model="google/vit-large-patch16-224", resources=ResourceConfig(num_gpus=0.1))


class EvalConfig(ArpoConfig):
    """Everything `python -m agents.evaluate` needs: the ARPO roles plus DINO, ViT and the evaluation."""

    dino: ImageEmbedderConfig = Field(default_factory=_dino_default, description="DINO metric backbone (thesis: ViT-S/16 DINO, facebook/dino-vits16).")
    vit: ImageEmbedderConfig = Field(default_factory=_vit_default, description="ViT metric backbone (thesis: ViT-L/16, google/vit-large-patch16-224).")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="Methods, seeds and outputs.")

    def arpo_config(self) -> ArpoConfig:
        """The ArpoConfig part (for the batch job)."""
        return ArpoConfig.model_validate(self.model_dump(include=set(ArpoConfig.model_fields)))
