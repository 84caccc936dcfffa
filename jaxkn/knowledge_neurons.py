"""EleutherAI's `KnowledgeNeurons` workflow over a jaxkn model: the same method names, argument names and
returned layouts, computed by jaxkn's pure functions (`jaxkn.attribution`, `jaxkn.neurons`,
`jaxkn.interventions`, `jaxkn.weight_edits`).

Where this class follows EleutherAI `knowledge-neurons` and where it does not:
- Defaults are EleutherAI's: coarse `adaptive_threshold` 0.3 and the `strict` refine rule (coarse in more than
  p * n prompts). The study's defaults differ (METHOD §4, §10 preset `converged`): t = 0.2 and `fraction`
  (at least p * n), because on a 135M model with 4 paraphrases `strict` at p = 0.5 asks 3 of 4 and leaves
  most facts without a neuron. Pass `coarse_adaptive_threshold=0.2, refine_rule="fraction"` for the study's.
- Attribution settings (site, quadrature, steps, baseline) come from the `AttributionConfig`; EleutherAI's
  `linspace` m = 20 is `AttributionConfig(quadrature="linspace", steps=20)` (preset `eleuther`).
- Neuron lists are [[layer, index], ...] sorted by (layer, index) (EleutherAI returns them in discovery order).
- `gt_prob` is P(ground truth) teacher-forced on its own tokens (the product over its K tokens, METHOD §2);
  EleutherAI conditions token k on the greedy completion's first k - 1 tokens instead. They agree for
  one-token answers and whenever the greedy completion is the ground truth. `argmax_completion` is the greedy
  completion of K tokens, `argmax_prob` the product of its tokens' probabilities.
- Activation patches (`suppress_knowledge`, `enhance_knowledge`) scale the neurons at the position that
  predicts each token ("last"), as EleutherAI's patch at index -1 does.
- Params are never mutated. The modifying methods return `(results, undo)` as EleutherAI's do. With
  `undo_modification=True` (default) nothing persists and `undo` is a no-op. With `undo_modification=False` the
  modification is kept on this object, explicitly: a weight edit replaces `self.params` with the new params (the
  old tree is untouched and `undo()` puts it back); an activation patch is kept in `self.standing_intervention`,
  applied by every later measurement of this object until `undo()` (attributing under a standing patch is
  refused: jaxkn's attribution takes no intervention).
- `negative_examples` drops every refined neuron coarse on any negative prompt (what EleutherAI's docstring
  says; its loop drops nothing, see `jaxkn.neurons.drop_negative`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from jaxkn import interventions as iv
from jaxkn import weight_edits
from jaxkn.attribution import AttributionConfig, Attributions, answer_token_ids, attribute
from jaxkn.neurons import (
    coarse_mask,
    drop_negative,
    mask_neurons,
    percentile_mask,
    refined_neurons,
    threshold_mask,
    to_eleuther,
)


def coarse_selection(scores, threshold: float | None = None, adaptive_threshold: float | None = None,
                     percentile: float | None = None) -> np.ndarray:
    """EleutherAI's coarse rule on scores [..., L, F]: exactly one of `threshold` (score > it),
    `adaptive_threshold` (score > it * max) or `percentile` (score > that percentile of the prompt's scores)."""
    given = [name for name, v in (("threshold", threshold), ("adaptive_threshold", adaptive_threshold),
                                  ("percentile", percentile)) if v is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of threshold / adaptive_threshold / percentile, got {given or 'none'} "
                         f"(get_refined_neurons: set coarse_adaptive_threshold=None when passing "
                         f"coarse_threshold or coarse_percentile)")
    if threshold is not None:
        return threshold_mask(scores, threshold)
    if adaptive_threshold is not None:
        return coarse_mask(scores, adaptive_threshold)
    return percentile_mask(scores, percentile)


def _noop(*args):
    return args


class KnowledgeNeurons:
    """EleutherAI's `KnowledgeNeurons` over a jaxkn model (module docstring).

    Args:
      cfg, params: the model.
      tokenizer: a `jaxkn.tokenizer.Tokenizer` (or anything with `encode(text, add_bos=None)`, `decode(ids)`
        and `bos_id`).
      attribution_config: what to attribute (default: METHOD.md's defaults); its site is also the site that
        `suppress_knowledge` / `enhance_knowledge` scale.
      add_bos: passed to the tokenizer (None: its own default).

    Attributes:
      params: the params measured and attributed (replaced, never mutated, by a kept weight edit).
      standing_intervention: an activation patch kept by `undo_modification=False`, or None.
    """

    def __init__(self, cfg, params, tokenizer, attribution_config: AttributionConfig = AttributionConfig(),  # noqa: B008 (frozen: immutable default)
                 *, add_bos: bool | None = None):
        self.cfg, self.params, self.tokenizer = cfg, params, tokenizer
        self.attribution_config, self.add_bos = attribution_config, add_bos
        self.standing_intervention: iv.Interventions | None = None

    # ---- EleutherAI's sizes ----------------------------------------------------------------------------

    def n_layers(self) -> int:
        return self.cfg.n_layers

    def intermediate_size(self) -> int:
        return self.cfg.d_ff

    # ---- attribution and neuron sets -------------------------------------------------------------------

    def attribute(self, prompts: Sequence[str], ground_truth: str | Sequence[str], steps: int | None = None
                  ) -> Attributions:
        if self.standing_intervention is not None:
            raise ValueError("an activation patch kept with undo_modification=False is standing; jaxkn attributes "
                             "the unpatched model only: call the undo function it returned first")
        config = self.attribution_config if steps is None else dataclasses.replace(self.attribution_config,
                                                                                    steps=steps)
        return attribute(self.params, self.cfg, self.tokenizer, prompts, ground_truth, config, add_bos=self.add_bos)

    def get_scores(self, prompt: str, ground_truth: str, steps: int | None = None) -> np.ndarray:
        """Attribution scores of every attributed neuron, [L, F] (L = the config's layers, default all)."""
        return np.asarray(self.attribute([prompt], ground_truth, steps).scores[0])

    def _coarse_lists(self, prompts, ground_truth, batch_size, steps, **rule) -> list[list[tuple[int, int]]]:
        sets = []
        for start in range(0, len(prompts), batch_size):
            result = self.attribute(list(prompts[start: start + batch_size]), ground_truth, steps)
            masks = coarse_selection(np.asarray(result.scores), **rule)
            sets += [mask_neurons(m, result.layers) for m in masks]
        return sets

    def get_coarse_neurons(self, prompt: str, ground_truth: str, threshold: float | None = None,
                           adaptive_threshold: float | None = None, percentile: float | None = None,
                           steps: int | None = None) -> list[list[int]]:
        """[[layer, index], ...] of one prompt by exactly one of EleutherAI's three rules (`coarse_selection`)."""
        lists = self._coarse_lists([prompt], ground_truth, 1, steps, threshold=threshold,
                                   adaptive_threshold=adaptive_threshold, percentile=percentile)
        return to_eleuther(lists[0])

    def get_refined_neurons(self, prompts: Sequence[str], ground_truth: str,
                            negative_examples: Sequence[str] | None = None, p: float = 0.5, batch_size: int = 10,
                            steps: int | None = None, coarse_adaptive_threshold: float | None = 0.3,
                            coarse_threshold: float | None = None, coarse_percentile: float | None = None,
                            quiet: bool = True, refine_rule: str = "strict") -> list[list[int]]:
        """[[layer, index], ...] refined over the paraphrases `prompts` of one fact by `refine_rule`, minus
        neurons coarse on any of `negative_examples` (attributed with the same `ground_truth`, as EleutherAI).

        batch_size: prompts attributed per compiled call. steps: overrides the config's integration points.
        """
        if isinstance(prompts, str) or not prompts:
            raise ValueError("get_refined_neurons takes a non-empty list of prompts (paraphrases of one fact)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        rule = dict(threshold=coarse_threshold, adaptive_threshold=coarse_adaptive_threshold,
                    percentile=coarse_percentile)
        coarse = self._coarse_lists(list(prompts), ground_truth, batch_size, steps, **rule)
        refined = refined_neurons(coarse, p, refine_rule)
        if not quiet:
            print(f"{sum(map(len, coarse))} coarse neurons found - refining: {len(refined)} refined")
        if negative_examples:
            negative = self._coarse_lists(list(negative_examples), ground_truth, batch_size, steps, **rule)
            refined = drop_negative(refined, negative)
            if not quiet:
                print(f"{len(refined)} neurons remaining after removing negative examples' coarse neurons")
        return to_eleuther(refined)

    # ---- measurements ----------------------------------------------------------------------------------

    def _ids(self, prompt: str, target: str) -> tuple[list[int], list[int]]:
        return answer_token_ids(self.tokenizer, prompt, target, add_bos=self.add_bos)

    def _with_standing(self, intervention):
        if self.standing_intervention is None:
            return intervention
        return self.standing_intervention if intervention is None else iv.compose(self.standing_intervention,
                                                                                     intervention)

    def measure(self, prompt: str, target: str, intervention: iv.Intervention | None = None,
                params=None) -> dict:
        """EleutherAI's result dict {gt_prob, argmax_completion, argmax_prob} for `prompt` under `params`
        (default self.params) and `intervention` (composed after any standing patch)."""
        params = self.params if params is None else params
        intervention = self._with_standing(intervention)
        prompt_ids, target_ids = self._ids(prompt, target)
        gt = iv.answer_probability(params, self.cfg, prompt_ids, target_ids, intervention)
        greedy = iv.generate_under(params, self.cfg, [prompt_ids], len(target_ids), intervention)
        argmax_ids = [int(t) for t in np.asarray(greedy.tokens)[0]]
        argmax = iv.answer_probability(params, self.cfg, prompt_ids, argmax_ids, intervention)
        return dict(gt_prob=float(gt.joint), argmax_completion=self.tokenizer.decode(argmax_ids),
                    argmax_prob=float(argmax.joint))

    def _report(self, results: dict, quiet: bool) -> dict:
        if not quiet:
            for when in ("before", "after"):
                r = results[when]
                print(f"{when} modification - groundtruth probability: {r['gt_prob']}\n"
                      f"argmax completion: `{r['argmax_completion']}`\nargmax prob: {r['argmax_prob']}")
        return results

    # ---- activation patches ----------------------------------------------------------------------------

    def modify_activations(self, prompt: str, ground_truth: str, neurons, mode: str = "suppress",
                           undo_modification: bool = True, quiet: bool = True) -> tuple[dict, Callable]:
        """Scales `neurons` by 0 ("suppress") or 2 ("enhance") at the predicting position; returns
        ({"before": ..., "after": ...}, undo)."""
        factors = {"suppress": iv.SUPPRESS, "enhance": iv.ENHANCE}
        if mode not in factors:
            raise ValueError(f"unknown mode {mode!r}; choose 'suppress' or 'enhance'")
        patch = iv.scale_neurons(neurons, factors[mode], self.cfg, positions="last",
                                 site=self.attribution_config.site)
        results = self._report(dict(before=self.measure(prompt, ground_truth),
                                    after=self.measure(prompt, ground_truth, patch)), quiet)
        if undo_modification:
            return results, _noop
        previous = self.standing_intervention
        self.standing_intervention = self._with_standing(patch)

        def undo():
            self.standing_intervention = previous

        return results, undo

    def suppress_knowledge(self, prompt: str, ground_truth: str, neurons, undo_modification: bool = True,
                           quiet: bool = True) -> tuple[dict, Callable]:
        """Zeroes `neurons` at the predicting position and measures P(ground truth) before and after."""
        return self.modify_activations(prompt, ground_truth, neurons, "suppress", undo_modification, quiet)

    def enhance_knowledge(self, prompt: str, ground_truth: str, neurons, undo_modification: bool = True,
                          quiet: bool = True) -> tuple[dict, Callable]:
        """Doubles `neurons` at the predicting position and measures P(ground truth) before and after."""
        return self.modify_activations(prompt, ground_truth, neurons, "enhance", undo_modification, quiet)

    # ---- weight edits ----------------------------------------------------------------------------------

    def _keep_params(self, new_params, undo_modification: bool) -> Callable:
        if undo_modification:
            return _noop
        previous = self.params
        self.params = new_params

        def undo():
            self.params = previous

        return undo

    def erase_knowledge(self, prompt: str, target: str, neurons, erase_value: str = "zero",
                        undo_modification: bool = True, quiet: bool = True, unk_token_id: int | None = None
                        ) -> tuple[dict, Callable]:
        """Erases the neurons' value vectors (`jaxkn.weight_edits.erase_neurons`: "zero", or "unk" with
        `unk_token_id`) and measures P(target) before and after; returns ({"before", "after"}, undo)."""
        new_params = weight_edits.erase_neurons(self.params, neurons, mode=erase_value, unk_token_id=unk_token_id,
                                         site=self.attribution_config.site)
        results = self._report(dict(before=self.measure(prompt, target),
                                    after=self.measure(prompt, target, params=new_params)), quiet)
        return results, self._keep_params(new_params, undo_modification)

    def edit_knowledge(self, prompt: str, target: str, neurons, undo_modification: bool = True,
                       quiet: bool = True, alpha: float = 2.0) -> tuple[dict, Callable]:
        """Moves the value vectors by alpha * (E[target] - E[original prediction]) (`jaxkn.weight_edits.
        edit_toward_token`; the original prediction is the greedy first token, target its first token)."""
        before = self.measure(prompt, target)
        prompt_ids, target_ids = self._ids(prompt, target)
        first = iv.generate_under(self.params, self.cfg, [prompt_ids], 1, self._with_standing(None))
        new_params = weight_edits.edit_toward_token(self.params, neurons, target_ids[0],
                                             source_id=int(np.asarray(first.tokens)[0, 0]), alpha=alpha,
                                             site=self.attribution_config.site)
        results = self._report(dict(before=before, after=self.measure(prompt, target, params=new_params)), quiet)
        return results, self._keep_params(new_params, undo_modification)


__all__ = ["KnowledgeNeurons", "coarse_selection"]
