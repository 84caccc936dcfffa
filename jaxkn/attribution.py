"""Integrated-gradients attribution over the FFN neurons of every layer (METHOD.md §2-§3, §8).

For a prompt x, gold token y, layer l and the activation a at the neuron site at the predicting position,

    Attr(l, i) = (a_i - b_i) * integral_0^1 dP(y | a_l := b + t (a - b)) / da_i dt

with P the softmax probability of y, approximated by a quadrature rule over the points t_k. Multi-token answers
are teacher-forced (prompt + y_1..y_{K-1} in one row); y_k is predicted at position T-1+k, attributed there, and
the K attributions are averaged.

Two implementations share one interface (`AttributionConfig.method`):

- `"reference"`: for every layer and point, the whole row runs through `jaxkn.model.forward` with a `SiteEdit`
  that replaces layer l's site at the predicting position (what the PyTorch tools do, one compiled program).
- `"fast"` (`jaxkn.attribution_fast`): the prompt's keys/values and residuals are computed once; each point
  only runs the predicting position from layer l upward against the cached keys/values.

dP/da' at the interpolated point a' is the gradient with respect to an additive, zero-valued probe in the
edit's shift: the edit writes `t * a + (1 - t) * b + probe` into the site.

Batches are right-padded (to `jaxkn.runtime.bucket_length` so compiled shapes repeat); a row's result does not
depend on the rest of the batch. Axis letters follow `jaxkn.model`; A is the answer-token axis.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from jaxkn.config import ModelConfig
from jaxkn.model import check_context, forward
from jaxkn.runtime import bucket_length
from jaxkn.site import SITES, SiteEdit

QUADRATURES = ("left", "right", "linspace", "gauss_legendre")
BASELINES = ("zero", "amig")
BASELINE_FORMS = ("difference", "activation")
METHODS = ("fast", "reference")


class AttributionInputError(ValueError):
    """A prompt/answer batch that cannot be attributed (empty, mismatched, too long, out of vocabulary)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttributionConfig:
    """What is attributed and how (METHOD.md §2-§3); recorded in every result.

    Attributes:
      site: the neuron site, "product" (default: the vector `down` reads), "gate" (pre-activation) or "act".
      baseline: "zero" (Dai et al.) or "amig" (mean activation with one token at a time replaced by EOS).
      baseline_form: "difference" multiplies the integral by (a - b); "activation" by a (as the AMIG authors'
        code does; completeness does not hold then).
      quadrature: "left" Riemann t = k/m (default, Dai's code), "right" (k = 1..m), "linspace"
        (EleutherAI: linspace(0, 1, m) averaged) or "gauss_legendre".
      steps: m, the number of points.
      method: "fast" (cached prefix, METHOD.md §8) or "reference" (full forward per point).
      layers: the layers to attribute (default: all); results are ordered as given.
      layers_per_group: fast path only: layers per compiled scan group (1 = a static schedule with ideal
        arithmetic; larger groups compile faster and redo a few layers per point). None = automatic.
    """

    site: str = "product"
    baseline: str = "zero"
    baseline_form: str = "difference"
    quadrature: str = "left"
    steps: int = 20
    method: str = "fast"
    layers: tuple[int, ...] | None = None
    layers_per_group: int | None = None

    def __post_init__(self):
        for name, allowed in (("site", SITES), ("baseline", BASELINES), ("baseline_form", BASELINE_FORMS),
                              ("quadrature", QUADRATURES), ("method", METHODS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"AttributionConfig.{name}={getattr(self, name)!r}; choose one of {allowed}")
        if self.steps < 1 or (self.quadrature == "linspace" and self.steps < 2):
            raise ValueError(f"AttributionConfig.steps={self.steps} is too small for {self.quadrature!r}")
        if self.layers is not None:
            layers = tuple(int(i) for i in self.layers)
            if not layers or len(set(layers)) != len(layers):
                raise ValueError(f"AttributionConfig.layers={self.layers!r}: give distinct layer indices")
            object.__setattr__(self, "layers", layers)
        if self.layers_per_group is not None and self.layers_per_group < 1:
            raise ValueError(f"layers_per_group must be >= 1, got {self.layers_per_group}")

    def layer_indices(self, n_layers: int) -> tuple[int, ...]:
        layers = tuple(range(n_layers)) if self.layers is None else self.layers
        bad = [i for i in layers if not 0 <= i < n_layers]
        if bad:
            raise ValueError(f"layers {bad} do not exist in a model with {n_layers} layers")
        return layers

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def quadrature_rule(name: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points t_k in [0, 1] and weights w_k with integral_0^1 f ~ sum_k w_k f(t_k) (float64)."""
    k = np.arange(steps, dtype=np.float64)
    if name == "left":
        return k / steps, np.full(steps, 1.0 / steps)
    if name == "right":
        return (k + 1) / steps, np.full(steps, 1.0 / steps)
    if name == "linspace":
        return np.linspace(0.0, 1.0, steps), np.full(steps, 1.0 / steps)
    if name == "gauss_legendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return (x + 1) / 2, w / 2
    raise ValueError(f"unknown quadrature {name!r}; choose one of {QUADRATURES}")


def integration_points(config: AttributionConfig) -> tuple[np.ndarray, np.ndarray]:
    """The rule's points plus, when absent, t = 0 with weight 0 (it gives P(baseline) for completeness)."""
    nodes, weights = quadrature_rule(config.quadrature, config.steps)
    if nodes[0] != 0.0:
        nodes, weights = np.concatenate([nodes, [0.0]]), np.concatenate([weights, [0.0]])
    return nodes, weights


# ---- inputs ---------------------------------------------------------------------------------------------

class AttributionBatch(NamedTuple):
    """Right-padded teacher-forced rows: prompt + y_1..y_{K-1}; y_k is read at answer_positions[:, k-1]."""

    tokens: Int[Array, "B T"]
    valid: Bool[Array, "B T"]
    answer_positions: Int[Array, "B A"]
    answer_tokens: Int[Array, "B A"]
    answer_mask: Bool[Array, "B A"]


def make_batch(cfg: ModelConfig, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]],
               *, bucket: bool = True) -> AttributionBatch:
    """Pads token-id prompts and answers into one batch (lengths bucketed so compiled shapes repeat)."""
    prompts, answers = [list(map(int, p)) for p in prompts], [list(map(int, a)) for a in answers]
    if not prompts:
        raise AttributionInputError("no prompts given: pass at least one (prompt, answer) pair")
    if len(prompts) != len(answers):
        raise AttributionInputError(f"{len(prompts)} prompts but {len(answers)} answers: give one answer per prompt")
    for i, (p, a) in enumerate(zip(prompts, answers)):
        if not p:
            raise AttributionInputError(f"prompt {i} has no tokens")
        if not a:
            raise AttributionInputError(f"answer {i} has no tokens: an answer must tokenize to at least one token")
        bad = [t for t in p + a if not 0 <= t < cfg.vocab_size]
        if bad:
            raise AttributionInputError(f"pair {i} has token ids {bad[:5]} outside the vocabulary [0, {cfg.vocab_size})")
        check_context(cfg, len(p) + len(a) - 1)
    rows = [p + a[:-1] for p, a in zip(prompts, answers)]
    longest, n_answer = max(map(len, rows)), max(map(len, answers))
    width = min(bucket_length(longest), cfg.max_position_embeddings) if bucket else longest
    tokens = np.zeros((len(rows), width), np.int32)
    valid = np.zeros((len(rows), width), bool)
    positions = np.zeros((len(rows), n_answer), np.int32)
    golds = np.zeros((len(rows), n_answer), np.int32)
    mask = np.zeros((len(rows), n_answer), bool)
    for i, (row, p, a) in enumerate(zip(rows, prompts, answers)):
        tokens[i, :len(row)], valid[i, :len(row)] = row, True
        positions[i, :len(a)] = len(p) - 1 + np.arange(len(a))
        golds[i, :len(a)], mask[i, :len(a)] = a, True
    return AttributionBatch(*map(jnp.asarray, (tokens, valid, positions, golds, mask)))


def answer_token_ids(tokenizer, prompt: str, answer: str, *, separator: str = " ",
                     add_bos: bool | None = None) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) per METHOD.md §2: the tokens of prompt + separator + answer after the prompt's
    own when those are a prefix, else the answer tokenized alone with a leading space; never a BOS."""
    if not answer.strip():
        raise AttributionInputError(f"answer {answer!r} is empty: it tokenizes to no token")
    prompt_ids = list(tokenizer.encode(prompt, add_bos=add_bos))
    sep = "" if (answer[:1].isspace() or prompt[-1:].isspace()) else separator
    full = list(tokenizer.encode(prompt + sep + answer, add_bos=add_bos))
    if full[:len(prompt_ids)] == prompt_ids and len(full) > len(prompt_ids):
        ids = full[len(prompt_ids):]
    else:
        ids = list(tokenizer.encode(" " + answer.lstrip(), add_bos=False))
    bos = getattr(tokenizer, "bos_id", None)
    ids = [t for t in ids if bos is None or t != bos]
    if not ids:
        raise AttributionInputError(f"answer {answer!r} tokenizes to no token")
    return prompt_ids, ids


# ---- results --------------------------------------------------------------------------------------------

@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Attributions:
    """Attributions of a batch, with the settings that produced them.

    Attributes:
      scores: Attr(l, i) averaged over answer tokens, [B, L, F] (L = the attributed `layers`, in order).
      completeness_error: |sum_i Attr(l, i) - mean_k (P_k(a) - P_k(b))| per layer, [B, L].
      prob_actual: P(y_k) of the unmodified model, [B, A] (0 where answer_mask is False).
      prob_baseline: P(y_k) with layer l's site at the baseline, [B, L, A].
      answer_mask: which answer slots are real tokens, [B, A].
      layers: the model layers the L axis holds.
      config: the `AttributionConfig` used.
    """

    scores: Float[Array, "B L F"]
    completeness_error: Float[Array, "B L"]
    prob_actual: Float[Array, "B A"]
    prob_baseline: Float[Array, "B L A"]
    answer_mask: Bool[Array, "B A"]
    layers: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))
    config: AttributionConfig = dataclasses.field(metadata=dict(static=True))

    def layer_scores(self, n_layers: int) -> np.ndarray:
        """Scores on the model's full layer axis, [B, n_layers, F] (NaN on layers not attributed)."""
        full = np.full((self.scores.shape[0], n_layers, self.scores.shape[2]), np.nan, np.float64)
        full[:, list(self.layers)] = np.asarray(self.scores)
        return full


class PointGradients(NamedTuple):
    """What both implementations return: the site activation, and dP/da' and P at every point."""

    acts: Float[Array, "L B A F"]
    grads: Float[Array, "L B A M F"]
    probs: Float[Array, "L B A M"]
    prob_actual: Float[Array, "B A"]


def gold_probability(logits: Float[Array, "... V"], gold: Int[Array, "..."]) -> Float[Array, "..."]:
    """Softmax probability of the gold token, computed in at least float32."""
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.exp(jnp.take_along_axis(logp, gold[..., None], axis=-1)[..., 0])


def amig_baseline(params, batch: AttributionBatch, cfg: ModelConfig, site: str) -> Float[Array, "L B A F"]:
    """AMIG baseline (Chen et al. 2024): for each predicting position p, the mean over real positions j <= p of
    the site activation at p when token j alone is replaced by EOS."""
    if cfg.eos_token_id is None:
        raise ValueError("the AMIG baseline needs cfg.eos_token_id; this model config has none")
    b, t = batch.tokens.shape
    replace = jnp.eye(t, dtype=bool)  # [J, T]: row j replaces token j
    tokens = jnp.where(replace[None], cfg.eos_token_id, batch.tokens[:, None, :]).reshape(b * t, t)
    rep = lambda x: jnp.repeat(x, t, axis=0)  # noqa: E731
    out = forward(params, tokens, cfg, valid=rep(batch.valid), capture=(site,),
                  capture_at=rep(batch.answer_positions), return_logits=False)
    acts = out.captures[site].reshape(cfg.n_layers, b, t, *batch.answer_positions.shape[1:], cfg.d_ff)
    # position j counts for the read position p when j <= p and j is a real token
    counts = (jnp.arange(t)[None, :, None] <= batch.answer_positions[:, None, :]) & batch.valid[:, :, None]
    weights = counts / jnp.maximum(counts.sum(axis=1, keepdims=True), 1)  # [B, J, A]
    return jnp.einsum("lbjaf,bja->lbaf", acts, weights.astype(acts.dtype))


# ---- the reference path ---------------------------------------------------------------------------------

def reference_point_gradients(params, batch: AttributionBatch, cfg: ModelConfig, config: AttributionConfig,
                              baseline: Float[Array, "L B A F"], nodes: Float[Array, "M"]) -> PointGradients:
    """dP/da' at every point by a full forward/backward of the whole row per (layer, answer token, point)."""
    layers = jnp.asarray(config.layer_indices(cfg.n_layers))
    out = forward(params, batch.tokens, cfg, valid=batch.valid, capture=(config.site,),
                  capture_at=batch.answer_positions, logits_at=batch.answer_positions)
    acts = out.captures[config.site][layers]
    dtype = acts.dtype
    width = batch.tokens.shape[1]

    def prob_at(probe, tokens, valid, position, gold, layer, t, base):
        where = ((jnp.arange(cfg.n_layers) == layer)[:, None] & (jnp.arange(width) == position)[None, :])
        edit = SiteEdit(scale=jnp.broadcast_to(t.astype(dtype), (cfg.n_layers, 1, 1, 1)),
                        shift=jnp.broadcast_to(((1 - t) * base + probe)[None, None, None], (cfg.n_layers, 1, 1, cfg.d_ff)),
                        where=where.astype(dtype)[:, None, :, None], site=config.site)
        logits = forward(params, tokens[None], cfg, valid=valid[None], edits=edit,
                         logits_at=position[None, None]).logits[0, 0]
        return gold_probability(logits, gold)

    value_and_grad = jax.value_and_grad(prob_at)
    over_points = jax.vmap(value_and_grad, in_axes=(None, None, None, None, None, None, 0, None))
    over_answers = jax.vmap(over_points, in_axes=(None, None, None, 0, 0, None, None, 0))
    over_rows = jax.vmap(over_answers, in_axes=(None, 0, 0, 0, 0, None, None, 0))

    def one_layer(args):
        layer, base = args  # base [B, A, F]
        probs, grads = over_rows(jnp.zeros(cfg.d_ff, dtype), batch.tokens, batch.valid, batch.answer_positions,
                                 batch.answer_tokens, layer, nodes.astype(dtype), base)
        return grads, probs

    grads, probs = jax.lax.map(one_layer, (layers, baseline))
    return PointGradients(acts, grads, probs, gold_probability(out.logits, batch.answer_tokens))


# ---- assembling the result ------------------------------------------------------------------------------

def _finish(points: PointGradients, baseline, batch: AttributionBatch, config: AttributionConfig,
            weights, layers: tuple[int, ...]) -> Attributions:
    acc = jnp.promote_types(points.grads.dtype, jnp.float32)  # accumulate in at least float32
    mask = batch.answer_mask.astype(acc)
    integral = jnp.einsum("lbamf,m->lbaf", points.grads.astype(acc), jnp.asarray(weights, acc))
    acts, base = points.acts.astype(acc), baseline.astype(acc)
    per_answer = (acts - base if config.baseline_form == "difference" else acts) * integral
    n_answers = mask.sum(axis=1)  # [B]
    scores = jnp.einsum("lbaf,ba->blf", per_answer, mask) / n_answers[:, None, None]
    prob_actual = points.prob_actual.astype(acc) * mask
    prob_baseline = jnp.transpose(points.probs[..., 0].astype(acc), (1, 0, 2)) * mask[:, None]  # t = 0 is point 0
    expected = (prob_actual.sum(axis=1)[:, None] - prob_baseline.sum(axis=2)) / n_answers[:, None]
    error = jnp.abs(scores.sum(axis=2) - expected)
    return Attributions(scores, error, prob_actual, prob_baseline, batch.answer_mask, layers, config)


@functools.partial(jax.jit, static_argnames=("cfg", "config"))
def attribute_batch(params, batch: AttributionBatch, cfg: ModelConfig, config: AttributionConfig) -> Attributions:
    """Attributions of a prepared batch: one compiled program for all layers, points and rows."""
    layers = config.layer_indices(cfg.n_layers)
    nodes, weights = integration_points(config)
    order = np.argsort(nodes == 0.0, kind="stable")[::-1]  # t = 0 first, so P(baseline) is point 0
    nodes, weights = jnp.asarray(nodes[order]), weights[order]
    if config.baseline == "amig":
        baseline = amig_baseline(params, batch, cfg, config.site)[jnp.asarray(layers)]
    else:
        shape = (len(layers), *batch.answer_tokens.shape, cfg.d_ff)
        baseline = jnp.zeros(shape, jnp.dtype(jax.tree_util.tree_leaves(params)[0].dtype))
    if config.method == "reference":
        points = reference_point_gradients(params, batch, cfg, config, baseline, nodes)
    else:
        from jaxkn.attribution_fast import fast_point_gradients

        points = fast_point_gradients(params, batch, cfg, config, baseline, nodes)
    return _finish(points, baseline, batch, config, weights, layers)


def attribute_ids(params, cfg: ModelConfig, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]],
                  config: AttributionConfig = AttributionConfig(), *, mesh=None, rule: str | None = None
                  ) -> Attributions:
    """Attributions for token-id (prompt, answer) pairs: no tokenizer needed (answers never include a BOS).

    Args:
      params, cfg: the model.
      prompts: one list of token ids per prompt (with a BOS if the model expects one).
      answers: the gold answer's token ids per prompt (one or more tokens each).
      config: what to compute (`AttributionConfig`).
      mesh: a ("data", "model") `jaxkn.sharding` mesh: the rows are split over "data" (padded, then dropped)
        and the results come back as numpy. None: one device.
      rule: places `params` on `mesh` under this rule ("replicated", "fsdp", "tensor"); None keeps params
        already placed on `mesh` as they are and replicates others.
    Returns:
      `Attributions` with scores [B, L, F].
    """
    config.layer_indices(cfg.n_layers)
    batch = make_batch(cfg, prompts, answers)
    if mesh is None:
        if rule is not None:
            raise AttributionInputError(f"rule={rule!r} needs a mesh: pass mesh=jaxkn.sharding.make_mesh(...)")
        return attribute_batch(params, batch, cfg, config)
    from jaxkn.sharding import place_params, run_sharded

    return run_sharded(attribute_batch, place_params(params, cfg, mesh, rule), batch, cfg, config, mesh=mesh)


def attribute(params, cfg: ModelConfig, tokenizer, prompts: Sequence[str], answers: Sequence[str] | str,
              config: AttributionConfig = AttributionConfig(), *, add_bos: bool | None = None, mesh=None,
              rule: str | None = None) -> Attributions:
    """Attributions for text prompts and answers (one answer for all prompts when `answers` is a string);
    `mesh` and `rule` as in `attribute_ids`."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if isinstance(answers, str):
        answers = [answers] * len(prompts)
    if len(prompts) != len(answers):
        raise AttributionInputError(f"{len(prompts)} prompts but {len(answers)} answers: give one answer per prompt")
    pairs = [answer_token_ids(tokenizer, p, a, add_bos=add_bos) for p, a in zip(prompts, answers)]
    return attribute_ids(params, cfg, [p for p, _ in pairs], [a for _, a in pairs], config, mesh=mesh, rule=rule)


__all__ = [
    "AttributionConfig", "AttributionBatch", "Attributions", "AttributionInputError", "PointGradients",
    "QUADRATURES", "BASELINES", "BASELINE_FORMS", "METHODS", "quadrature_rule", "integration_points",
    "make_batch", "answer_token_ids", "amig_baseline", "gold_probability", "reference_point_gradients",
    "attribute_batch", "attribute_ids", "attribute",
]
