"""jaxkn's neuron sites under other tools' names, and neuron sets exported for those tools (docs/hook_names.md).

A LLaMA-family MLP computes `down_proj(act_fn(gate_proj(x)) * up_proj(x))`; neuron (l, i) is coordinate i of
one intermediate vector of layer l (METHOD.md §2). The same coordinate is addressed as:

  site      TransformerLens (GatedMLP)       nnsight (HF LlamaForCausalLM)            what it holds
  product   blocks.{l}.mlp.hook_post         model.model.layers[l].mlp.down_proj.input   act(gate(x)) * up(x)
  gate      blocks.{l}.mlp.hook_pre          model.model.layers[l].mlp.gate_proj.output  gate(x), before act
  act       (none)                           model.model.layers[l].mlp.act_fn.output     act(gate(x))

TransformerLens's GatedMLP hooks `hook_pre` (x @ W_gate), `hook_pre_linear` (x @ W_in, HF's up_proj) and
`hook_post` (act_fn(pre) * pre_linear); it has no hook on act_fn(pre) alone (`hook_mid` exists only for
layer-norm activations such as SoLU), so the "act" site has no TransformerLens name. nnsight's `.input` is the
module's first positional argument (nnsight >= 0.4; older versions wrote `.input[0][0]`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import NamedTuple

from jaxkn.site import SITES


class SiteNames(NamedTuple):
    """One site's names in other tools; `{layer}` is filled in; None where the tool has no such hook."""

    transformer_lens: str | None
    nnsight: str
    holds: str


SITE_NAMES = {
    "product": SiteNames("blocks.{layer}.mlp.hook_post", "model.model.layers[{layer}].mlp.down_proj.input",
                         "act_fn(gate_proj(x)) * up_proj(x): the vector down_proj reads"),
    "gate": SiteNames("blocks.{layer}.mlp.hook_pre", "model.model.layers[{layer}].mlp.gate_proj.output",
                      "gate_proj(x): the gate pre-activation"),
    "act": SiteNames(None, "model.model.layers[{layer}].mlp.act_fn.output", "act_fn(gate_proj(x))"),
}
# Not a jaxkn site (no neuron is defined there), listed so every hook of the MLP has a name here.
UP_NAMES = SiteNames("blocks.{layer}.mlp.hook_pre_linear", "model.model.layers[{layer}].mlp.up_proj.output",
                     "up_proj(x): the linear branch")
EXPORT_STYLES = ("eleuther", "transformer_lens", "nnsight")


def _names(site: str) -> SiteNames:
    if site not in SITE_NAMES:
        raise ValueError(f"unknown neuron site {site!r}; choose one of {SITES}")
    return SITE_NAMES[site]


def transformer_lens_hook(site: str, layer: int) -> str:
    """TransformerLens hook name of `site` in block `layer`, e.g. 'blocks.3.mlp.hook_post'."""
    name = _names(site).transformer_lens
    if name is None:
        raise ValueError(f"TransformerLens's GatedMLP has no hook for site {site!r} (act_fn(gate) alone): hook "
                         f"'blocks.{{l}}.mlp.hook_pre' and apply the activation, or use site 'product' or 'gate'")
    return name.format(layer=int(layer))


def nnsight_path(site: str, layer: int) -> str:
    """nnsight path of `site` in decoder layer `layer` of a HF LLaMA-family model."""
    return _names(site).nnsight.format(layer=int(layer))


def export_neurons(neurons: Iterable, site: str = "product", style: str = "eleuther"):
    """A neuron set [(layer, index), ...] in another tool's terms.

    style:
      "eleuther": [[layer, index], ...] sorted (EleutherAI knowledge-neurons' lists; the site is not encoded).
      "transformer_lens": {hook name: [index, ...]}, e.g. {"blocks.3.mlp.hook_post": [12, 40]}; index the
        cached activation's last axis with the list.
      "nnsight": {module path: [index, ...]}, e.g. {"model.model.layers[3].mlp.down_proj.input": [12, 40]}.
    Layers appear in increasing order, indices sorted and de-duplicated.
    """
    if style not in EXPORT_STYLES:
        raise ValueError(f"unknown export style {style!r}; choose one of {EXPORT_STYLES}")
    _names(site)
    pairs = sorted({(int(a), int(b)) for a, b in neurons})
    if any(layer < 0 or index < 0 for layer, index in pairs):
        raise ValueError(f"negative layer or neuron index in {[p for p in pairs if min(p) < 0][:5]}")
    if style == "eleuther":
        return [[layer, index] for layer, index in pairs]
    name = transformer_lens_hook if style == "transformer_lens" else nnsight_path
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, index in pairs:
        by_layer[layer].append(index)
    return {name(site, layer): indices for layer, indices in sorted(by_layer.items())}


__all__ = ["SiteNames", "SITE_NAMES", "UP_NAMES", "EXPORT_STYLES", "transformer_lens_hook", "nnsight_path",
           "export_neurons"]
