"""The two-hop study's settings: one frozen value, recorded in every result file (METHOD.md §4-§6).

`StudyConfig` is separate from the model's `ModelConfig`. Its `fingerprint()` covers every setting that changes a
per-item result, so a results folder written under other settings is never mixed into a run (`--resume` and a
rerun into the same `--out` check it). Settings that only change how many items run or how the aggregate is
computed (`limit`, `bootstrap`, `tau`, the output folder) are outside the fingerprint: raising `--limit` and
resuming adds items, and `tau` is applied when aggregating, so the tau curve needs no recomputation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

COT_SETTINGS = ("none", "zero_shot", "few_shot")
SUMMARIES = ("max", "mean")
# Settings that do not change any per-item result (see the module docstring).
_NOT_FINGERPRINTED = ("limit", "screen", "bootstrap", "tau", "seed_bootstrap", "mesh", "sharding")
SHARDING_RULES = ("replicated", "fsdp", "tensor")  # jaxkn.sharding.RULES (not imported: settings stay jax-free)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StudyConfig:
    """Every setting of one run of the study.

    Attributes:
      model: the model path (jaxkn checkpoint folder, HF folder or .gguf), or None for the embedded SmolLM2.
      dataset: a TFRKN / MQuAKE / jaxkn-built file, or None for the built-in dataset.
      limit: items to study after the filter (METHOD §6: `--limit` counts items after the filter).
      screen: at most `screen * limit` candidates are screened by the filter (a model that knows little
        would otherwise screen the whole dataset).
      cot: the CoT settings to run ("none", "zero_shot", "few_shot"); "none" is always included.
      seed: seeds the random control sets, the counterfactual choices and the bootstrap.
      threshold_t: coarse KNs: Attr > t * max (METHOD §4).
      share_p: refined KNs: coarse in at least p * n of the n paraphrases (METHOD §4).
      tau: recalled := two-hop level >= tau * single-hop level (METHOD §5); applied when aggregating.
      site: the neuron site ("product", "gate", "act").
      baseline: the IG baseline ("zero", "amig").
      steps: integration points m; quadrature: the rule ("left", "right", "linspace", "gauss_legendre").
      queries_per_hop: paraphrased queries per hop used for attribution (the first n of the item's list).
      cot_summary: how a CoT read is summarised over generated positions for `recalled` ("max", "mean").
      answer_tokens: new tokens generated for a direct answer (no CoT, single hops, interventions, conflict).
      cot_tokens: new tokens generated for a chain-of-thought answer.
      decode_mode: where an intervention applies while decoding ("last", "cached", "all"; METHOD §6.3).
      enhance / suppress: the intervention factors.
      batch_size: prompts per generation / capture batch.
      bootstrap: bootstrap resamples for every interval; seed_bootstrap: its seed offset.
      mesh: "DATAxMODEL" device mesh (None: one device): prompts split over "data", params over "model".
      sharding: how params sit on the "model" axis ("replicated", "fsdp", "tensor"; `jaxkn.sharding`). "fsdp"
        works for any model (a weight with no axis divisible by the model size is replicated); "tensor" needs
        heads, d_ff and vocabulary divisible by it. Results equal one device's in float32 up to summation order,
        so neither is fingerprinted.
    """

    model: str | None = None
    dataset: str | None = None
    limit: int = 24
    screen: int = 25
    cot: tuple[str, ...] = COT_SETTINGS
    seed: int = 0
    threshold_t: float = 0.2
    share_p: float = 0.5
    tau: float = 0.5
    site: str = "product"
    baseline: str = "zero"
    steps: int = 20
    quadrature: str = "left"
    queries_per_hop: int = 4
    cot_summary: str = "max"
    answer_tokens: int = 8
    cot_tokens: int = 48
    decode_mode: str = "last"
    enhance: float = 2.0
    suppress: float = 0.0
    batch_size: int = 8
    bootstrap: int = 1000
    seed_bootstrap: int = 0
    mesh: str | None = None
    sharding: str = "fsdp"

    def __post_init__(self):
        cot = tuple(dict.fromkeys(("none",) + tuple(self.cot)))  # "none" first and always present
        bad = [c for c in cot if c not in COT_SETTINGS]
        if bad:
            raise ValueError(f"unknown CoT setting(s) {bad}; choose from {COT_SETTINGS}")
        object.__setattr__(self, "cot", cot)
        checks = (
            (self.limit >= 1, f"limit must be >= 1, got {self.limit}"),
            (self.screen >= 1, f"screen must be >= 1, got {self.screen}"),
            (0 < self.threshold_t <= 1, f"t must be in (0, 1], got {self.threshold_t}"),
            (0 < self.share_p <= 1, f"p must be in (0, 1], got {self.share_p}"),
            (self.tau > 0, f"tau must be positive, got {self.tau}"),
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.queries_per_hop >= 2, f"queries-per-hop must be >= 2 (the single-hop level is read out of "
                                        f"sample, leaving one query out), got {self.queries_per_hop}"),
            (self.cot_summary in SUMMARIES, f"cot-summary must be one of {SUMMARIES}, got {self.cot_summary!r}"),
            (self.answer_tokens >= 1 and self.cot_tokens >= 1, "answer-tokens and cot-tokens must be >= 1"),
            (self.batch_size >= 1, f"batch-size must be >= 1, got {self.batch_size}"),
            (self.bootstrap >= 10, f"bootstrap needs >= 10 resamples, got {self.bootstrap}"),
            (self.sharding in SHARDING_RULES, f"sharding must be one of {SHARDING_RULES}, got {self.sharding!r}"),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def fingerprint(self, model_id: str) -> str:
        """A short hash of the model identity and every setting that changes a per-item result."""
        keyed = {k: v for k, v in self.to_dict().items() if k not in _NOT_FINGERPRINTED}
        text = json.dumps({"model": model_id, **keyed}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def attribution_key(self, model_id: str) -> str:
        """A hash of what a fact's knowledge neurons depend on (the fact cache key; METHOD §4)."""
        keyed = dict(model=model_id, t=self.threshold_t, p=self.share_p, site=self.site, baseline=self.baseline,
                     steps=self.steps, quadrature=self.quadrature, queries=self.queries_per_hop, seed=self.seed)
        return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]
