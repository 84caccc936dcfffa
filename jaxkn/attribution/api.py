"""Attribution entry points: one compiled program per batch, dispatched to the reference or fast schedule."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxkn.attribution.config import AttributionConfig, AttributionInputError, integration_points
from jaxkn.attribution.fast import fast_point_gradients
from jaxkn.attribution.inputs import AttributionBatch, answer_token_ids, make_batch
from jaxkn.attribution.reference import reference_point_gradients
from jaxkn.attribution.results import Attributions, PointGradients, amig_baseline
from jaxkn.config import ModelConfig
from jaxkn.sharding import place_params, run_sharded


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
