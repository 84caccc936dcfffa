"""The same integrated gradients in PyTorch, the way EleutherAI's knowledge-neurons computes them (the baseline).

For each answer token and each layer l: a hook at the neuron site (product: the input of `mlp.down_proj`;
gate: the output of `mlp.gate_proj`) of a transformers LLaMA-family model replaces the predicting position's
activation in a batch of m copies of the whole row by b + t_k (a - b); one full forward (full-vocabulary logits
at every position, as the library does) and one backward give dP(gold)/da' for the m points. The quadrature
rule is the same as jaxkn's (`--quadrature`), so parity compares like with like. Multi-token answers are
teacher-forced and averaged, as in jaxkn (METHOD.md §2).

`captum_attribute_fact` does the same attribution with captum's `LayerIntegratedGradients`, one call per layer,
on a pass-through module inserted at the same site that can swap the predicting position for the baseline.

Import from tests or scripts with `sys.path.insert(0, "<repo>/benchmarks")`, then `import torch_baseline`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch

SITES = ("product", "gate")


def quadrature_points(name: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points t_k and weights w_k on [0, 1], float64 (left, right, linspace or gauss_legendre)."""
    if name == "left":
        return torch.arange(steps, dtype=torch.float64) / steps, torch.full((steps,), 1.0 / steps, dtype=torch.float64)
    if name == "right":
        return (torch.arange(steps, dtype=torch.float64) + 1) / steps, torch.full((steps,), 1.0 / steps,
                                                                                  dtype=torch.float64)
    if name == "linspace":
        return torch.linspace(0, 1, steps, dtype=torch.float64), torch.full((steps,), 1.0 / steps, dtype=torch.float64)
    if name == "gauss_legendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return torch.from_numpy((x + 1) / 2), torch.from_numpy(w / 2)
    raise ValueError(f"unknown quadrature {name!r}")


def _mlp(model, layer: int):
    return model.model.layers[layer].mlp


@contextlib.contextmanager
def site_hook(model, layer: int, site: str, rewrite):
    """Calls `rewrite(tensor [B, T, F]) -> tensor` on the site of one layer for the duration of the block."""
    mlp = _mlp(model, layer)
    if site == "product":
        handle = mlp.down_proj.register_forward_pre_hook(lambda mod, args: (rewrite(args[0]),) + tuple(args[1:]))
    elif site == "gate":
        handle = mlp.gate_proj.register_forward_hook(lambda mod, args, out: rewrite(out))
    else:
        raise ValueError(f"site {site!r} not supported by the baseline; choose one of {SITES}")
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def site_activations(model, ids: torch.Tensor, positions: Sequence[int], site: str) -> torch.Tensor:
    """The site at `positions` for every layer and row: [L, B, P, F]."""
    captured = []

    def keep(x):
        captured.append(x[:, list(positions)].clone())
        return x

    with contextlib.ExitStack() as stack:
        for layer in range(model.config.num_hidden_layers):
            stack.enter_context(site_hook(model, layer, site, keep))
        model(ids)
    return torch.stack(captured)


def amig_baseline(model, tokens: Sequence[int], positions: Sequence[int], site: str, eos_id: int) -> torch.Tensor:
    """Mean over j <= p of the site at p with token j replaced by EOS: [L, P, F]."""
    t = len(tokens)
    ids = torch.tensor(tokens).repeat(t, 1)
    ids[torch.arange(t), torch.arange(t)] = eos_id
    acts = site_activations(model, ids, positions, site)  # [L, J, P, F]
    out = [acts[:, : p + 1, k].mean(dim=1) for k, p in enumerate(positions)]
    return torch.stack(out, dim=1)


def attribute_fact(model, prompt: Sequence[int], answer: Sequence[int], *, steps: int = 20,
                   quadrature: str = "left", site: str = "product",
                   baseline: str = "zero", baseline_form: str = "difference", layers: Sequence[int] | None = None,
                   eos_id: int | None = None, points_per_batch: int | None = None) -> np.ndarray:
    """Attribution scores [len(layers), F] of one (prompt ids, answer ids) fact, averaged over answer tokens.

    `points_per_batch` bounds the scaled copies run at once (None: all m in one batch); the points are
    independent, so chunking changes only the memory (m copies x T tokens x vocabulary logits), not the result.
    """
    tokens = list(prompt) + list(answer[:-1])
    positions = [len(prompt) - 1 + k for k in range(len(answer))]
    layers = list(range(model.config.num_hidden_layers)) if layers is None else list(layers)
    ids = torch.tensor([tokens])
    acts = site_activations(model, ids, positions, site)[:, 0]  # [L, P, F]
    if baseline == "zero":
        base = torch.zeros_like(acts)
    else:
        eos = model.config.eos_token_id if eos_id is None else eos_id
        base = amig_baseline(model, tokens, positions, site, eos)
    alphas, weights = quadrature_points(quadrature, steps)
    scores = torch.zeros(len(layers), acts.shape[-1], dtype=torch.float64)
    for k, (pos, gold) in enumerate(zip(positions, answer)):
        for row, layer in enumerate(layers):
            a, b = acts[layer, k], base[layer, k]
            grads = _point_gradients(model, ids, layer, site, pos, gold, a, b, alphas, points_per_batch)
            integral = (weights[:, None] * grads.double()).sum(dim=0)
            scores[row] += ((a - b) if baseline_form == "difference" else a).double() * integral
    return (scores / len(answer)).numpy()


def _point_gradients(model, ids, layer, site, pos, gold, a, b, alphas, points_per_batch=None) -> torch.Tensor:
    """dP(gold)/da' at the m points: [m, F], from batched full forwards/backwards of at most `points_per_batch`
    scaled copies each (None: all m at once)."""
    size = len(alphas) if points_per_batch is None else max(1, int(points_per_batch))
    return torch.cat([_chunk_gradients(model, ids, layer, site, pos, gold, a, b, alphas[i: i + size])
                      for i in range(0, len(alphas), size)])


def _chunk_gradients(model, ids, layer, site, pos, gold, a, b, alphas) -> torch.Tensor:
    """dP(gold)/da' at the given points, from one batched full forward/backward: [len(alphas), F]."""
    points = (b[None] + alphas[:, None].to(a.dtype) * (a - b)[None]).detach().requires_grad_(True)

    def replace(x):
        x = x.clone()
        x[:, pos] = points
        return x

    with site_hook(model, layer, site, replace):
        logits = model(ids.repeat(len(alphas), 1)).logits  # [m, T, V]: every position, as EleutherAI does
    probs = torch.softmax(logits[:, pos].float(), dim=-1)[:, gold]
    return torch.autograd.grad(probs.sum(), points)[0]


# ---- captum ---------------------------------------------------------------------------------------------

class _PositionSite(torch.nn.Module):
    """Pass-through at the site, except that with switch 0 the predicting position holds the baseline."""

    def __init__(self, inner: torch.nn.Module | None, pos: int, base: torch.Tensor, before: bool):
        super().__init__()
        self.inner, self.pos, self.base, self.before = inner, pos, base, before
        self.switch = None

    def forward(self, x):
        if not self.before:
            x = self.inner(x)
        s = self.switch.to(x.dtype)[:, None]  # [B, 1]
        x = x.clone()
        x[:, self.pos] = s * x[:, self.pos] + (1 - s) * self.base
        return x


class _Site(torch.nn.Module):
    def __init__(self, probe: _PositionSite, down: torch.nn.Module):
        super().__init__()
        self.probe, self.down = probe, down

    def forward(self, x):
        return self.down(self.probe(x))


CAPTUM_METHODS = {"left": "riemann_left", "right": "riemann_right", "gauss_legendre": "gausslegendre"}


def captum_attribute_fact(model, prompt: Sequence[int], answer: Sequence[int], *, steps: int = 20,
                          quadrature: str = "left", site: str = "product",
                          layers: Sequence[int] | None = None, internal_batch_size: int | None = None) -> np.ndarray:
    """captum `LayerIntegratedGradients` at the same site and baseline (zero), one call per layer: [L, F].

    `internal_batch_size` is captum's own: the scaled copies run in batches of at most that many (None: all).
    """
    from captum.attr import LayerIntegratedGradients

    if quadrature not in CAPTUM_METHODS:
        raise ValueError(f"captum has no rule equal to {quadrature!r}; use one of {sorted(CAPTUM_METHODS)}")
    tokens = list(prompt) + list(answer[:-1])
    layers = list(range(model.config.num_hidden_layers)) if layers is None else list(layers)
    ids = torch.tensor([tokens])
    scores = np.zeros((len(layers), model.config.intermediate_size))
    for k, gold in enumerate(answer):
        pos = len(prompt) - 1 + k
        for row, layer in enumerate(layers):
            mlp = _mlp(model, layer)
            name = "down_proj" if site == "product" else "gate_proj"
            original = getattr(mlp, name)
            probe = _PositionSite(None if site == "product" else original, pos, 0.0, before=site == "product")
            setattr(mlp, name, _Site(probe, original) if site == "product" else probe)
            try:
                def forward(input_ids, switch):  # closes over this iteration's probe, pos, gold: used before they change
                    probe.switch = switch  # noqa: B023
                    logits = model(input_ids).logits[:, pos]  # noqa: B023
                    return torch.softmax(logits.float(), dim=-1)[:, gold]  # noqa: B023

                lig = LayerIntegratedGradients(forward, probe)
                attr = lig.attribute((ids, torch.ones(1)), baselines=(ids, torch.zeros(1)), n_steps=steps,
                                     method=CAPTUM_METHODS[quadrature],
                                     internal_batch_size=internal_batch_size)
            finally:
                setattr(mlp, name, original)
            scores[row] += attr[0, pos].detach().double().numpy()
    return scores / len(answer)


__all__ = ["quadrature_points", "site_hook", "site_activations", "amig_baseline", "attribute_fact", "captum_attribute_fact"]
