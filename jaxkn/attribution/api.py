"""Attribution entry points: a fixed rule is one compiled program per batch; converged mode adds one per
refinement round; each dispatches to the reference or fast schedule."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxkn.attribution.config import (
    AttributionConfig,
    AttributionInputError,
    integration_points,
    refined_rule,
)
from jaxkn.attribution.fast import fast_point_gradients, fast_point_gradients_at
from jaxkn.attribution.inputs import AttributionBatch, answer_token_ids, make_batch
from jaxkn.attribution.reference import reference_point_gradients
from jaxkn.attribution.results import Attributions, PointGradients, amig_baseline
from jaxkn.config import ModelConfig
from jaxkn.sharding import place_params, run_sharded


def _scores_and_error(points: PointGradients, baseline, batch: AttributionBatch, config: AttributionConfig,
                      weights, prob_baseline):
    """Scores [B, L, F] (answer-token mean) and completeness error [B, L] from the per-point gradients;
    weights [L, B, A, M] are the rule's, prob_baseline [B, L, A] is P(y_k) at t = 0."""
    acc = jnp.promote_types(points.grads.dtype, jnp.float32)  # accumulate in at least float32
    mask = batch.answer_mask.astype(acc)
    integral = jnp.einsum("lbamf,lbam->lbaf", points.grads.astype(acc), weights.astype(acc))
    acts, base = points.acts.astype(acc), baseline.astype(acc)
    per_answer = (acts - base if config.baseline_form == "difference" else acts) * integral
    n_answers = mask.sum(axis=1)  # [B]
    scores = jnp.einsum("lbaf,ba->blf", per_answer, mask) / n_answers[:, None, None]
    prob_actual = points.prob_actual.astype(acc) * mask
    expected = (prob_actual.sum(axis=1)[:, None] - (prob_baseline.astype(acc) * mask[:, None]).sum(2)) / n_answers[:, None]
    return scores, jnp.abs(scores.sum(axis=2) - expected)


def _first_round(params, batch: AttributionBatch, cfg: ModelConfig, config: AttributionConfig):
    """The fixed rule on every attributed layer: (scores, error, prob_actual, prob_baseline, baseline,
    samples), samples = (t, P(t)) [L, B, A, S] including t = 0 and t = 1 (what refinement places panels by)."""
    layers = config.layer_indices(cfg.n_layers)
    nodes, weights = integration_points(config)
    order = np.argsort(nodes == 0.0, kind="stable")[::-1]  # t = 0 first, so P(baseline) is point 0
    shape = (len(layers), *batch.answer_tokens.shape)
    nodes = jnp.broadcast_to(jnp.asarray(nodes[order]), (*shape, len(nodes)))
    weights = jnp.broadcast_to(jnp.asarray(weights[order]), nodes.shape)
    if config.baseline == "amig":
        baseline = amig_baseline(params, batch, cfg, config.site)[jnp.asarray(layers)]
    else:
        baseline = jnp.zeros((*shape, cfg.d_ff), jnp.dtype(jax.tree_util.tree_leaves(params)[0].dtype))
    if config.method == "reference":
        points = reference_point_gradients(params, batch, cfg, config, baseline, nodes)
    else:
        points = fast_point_gradients(params, batch, cfg, config, baseline, nodes)
    prob_baseline = jnp.transpose(points.probs[..., 0], (1, 0, 2))  # [B, L, A]
    scores, error = _scores_and_error(points, baseline, batch, config, weights, prob_baseline)
    mask = batch.answer_mask
    prob_actual = jnp.where(mask, points.prob_actual, 0)
    prob_baseline = jnp.where(mask[:, None], prob_baseline, 0).astype(scores.dtype)
    samples = _with_end(nodes, points.probs, points.prob_actual)
    return scores, error, prob_actual.astype(scores.dtype), prob_baseline, baseline, samples


def _with_end(nodes, probs, prob_actual):
    """(t, P) samples plus t = 1, where P is the unmodified model's P(y_k)."""
    one = jnp.ones_like(nodes[..., :1])
    p_one = jnp.broadcast_to(prob_actual[None, ..., None].astype(probs.dtype), probs[..., :1].shape)
    return jnp.concatenate([nodes, one], -1), jnp.concatenate([probs, p_one], -1)


@functools.partial(jax.jit, static_argnames=("cfg", "config"))
def _fixed_rule(params, batch: AttributionBatch, cfg: ModelConfig, config: AttributionConfig) -> Attributions:
    layers = config.layer_indices(cfg.n_layers)
    scores, error, prob_actual, prob_baseline, _, _ = _first_round(params, batch, cfg, config)
    points = jnp.full(error.shape, config.steps, jnp.int32)
    return Attributions(scores, error, prob_actual, prob_baseline, batch.answer_mask, points,
                        jnp.zeros(error.shape, bool), layers, config)


_first_round_jit = jax.jit(_first_round, static_argnames=("cfg", "config"))


@functools.partial(jax.jit, static_argnames=("cfg", "config", "n_points"))
def _refine_round(params, batch: AttributionBatch, cfg: ModelConfig, config: AttributionConfig, n_points: int,
                  layers, baseline, samples, prob_baseline):
    """One refinement round on a traced list of layers: `n_points` composite Gauss-Legendre points on panels
    placed by the samples of P(t) so far. Returns (scores [B, n, F], error [B, n], samples [n, B, A, S])."""
    nodes, weights = refined_rule(*samples, n_points)  # [n, B, A, M]
    if config.method == "reference":
        points = reference_point_gradients(params, batch, cfg, config, baseline, nodes, layers)
    else:
        points = fast_point_gradients_at(params, batch, cfg, config, layers, baseline, nodes)
    scores, error = _scores_and_error(points, baseline, batch, config, weights, prob_baseline)
    t, p = _with_end(nodes, points.probs, points.prob_actual)
    p_zero = jnp.transpose(prob_baseline, (1, 0, 2))[..., None].astype(p.dtype)  # P(b), from the first round
    return scores, error, (jnp.concatenate([jnp.zeros_like(t[..., :1]), t], -1), jnp.concatenate([p_zero, p], -1))


def _bucket(n: int, most: int) -> int:
    """Powers of two (capped at `most`), so refinement programs compile once per size."""
    return min(1 << (n - 1).bit_length(), most)


def _converged(params, batch: AttributionBatch, cfg: ModelConfig, config: AttributionConfig) -> Attributions:
    """Converged mode (METHOD.md §3): the fixed rule everywhere, then rounds that redo, with twice the points,
    the layers where some prompt is still above the tolerance. A (prompt, layer) keeps the first round's
    result that meets the tolerance (so, up to float rounding, a prompt's result does not depend on the rest
    of its batch)."""
    layers = config.layer_indices(cfg.n_layers)
    scores, error, prob_actual, prob_baseline, baseline, samples = _first_round_jit(params, batch, cfg, config)
    points = jnp.full(error.shape, config.steps, jnp.int32)
    held = np.arange(len(layers))  # which layers `samples` holds, in order
    for n_points in config.refinement_points():
        # not "error > tolerance": a NaN error stays open and ends flagged, never passes
        open_ = ~(error <= config.tolerance) & batch.answer_mask.any(axis=1)[:, None]  # [B, L]
        todo = np.flatnonzero(np.asarray(jnp.any(open_, axis=0)))
        if todo.size == 0:
            break
        size = _bucket(todo.size, len(layers))
        # padding slots recompute the first open layer and are never written back (index len(layers) drops)
        slots = np.concatenate([todo, np.full(size - todo.size, len(layers))])
        compute = np.concatenate([todo, np.full(size - todo.size, todo[0])])
        first_at = {int(s): i for i, s in reversed(list(enumerate(held)))}  # held holds every open layer
        in_held = np.asarray([first_at[int(s)] for s in compute])
        new_scores, new_error, new_samples = _refine_round(
            params, batch, cfg, config, n_points, jnp.asarray(np.asarray(layers)[compute]),
            baseline[compute], tuple(s[in_held] for s in samples), prob_baseline[:, compute])
        take = open_[:, compute] & jnp.asarray(slots < len(layers))[None]  # [B, n]
        scores = scores.at[:, slots].set(jnp.where(take[..., None], new_scores, scores[:, compute]), mode="drop")
        error = error.at[:, slots].set(jnp.where(take, new_error, error[:, compute]), mode="drop")
        points = points.at[:, slots].set(jnp.where(take, n_points, points[:, compute]), mode="drop")
        # The next round places its panels by every P(t) seen so far on the layer, not the last round's alone:
        # on a path with a near-discontinuity (SmolLM2 layer 0, a second answer token), panels placed by the
        # last round only kept missing it (error 0.042, 0.028, 0.035 at 64, 128, 256 points), by all samples
        # it met 0.01 at 256. The new round's own t = 0 and t = 1 ends are already held.
        held = compute
        samples = tuple(jnp.concatenate([old[in_held], new[..., 1:-1]], -1) for old, new in zip(samples, new_samples))
    flagged = ~(error <= config.tolerance)
    return Attributions(scores, error, prob_actual, prob_baseline, batch.answer_mask, points, flagged, layers,
                        config)


def attribute_batch(params, batch: AttributionBatch, cfg: ModelConfig, config: AttributionConfig) -> Attributions:
    """Attributions of a prepared batch.

    A fixed rule is one compiled program for all layers, points and rows. Converged mode (`config.tolerance`)
    runs that program, then at most one compiled program per refinement round, on the layers still above
    the tolerance (their count bucketed to powers of two so shapes repeat across batches).
    """
    if config.tolerance is None:
        return _fixed_rule(params, batch, cfg, config)
    return _converged(params, batch, cfg, config)


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
