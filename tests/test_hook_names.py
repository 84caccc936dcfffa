"""jaxkn sites under TransformerLens and nnsight names; the nnsight paths are checked against a real HF model."""

from __future__ import annotations

import re

import numpy as np
import pytest

from jaxkn.hook_names import SITE_NAMES, export_neurons, nnsight_path, transformer_lens_hook
from jaxkn.recall import site_activations

NEURONS = [(3, 40), (0, 7), (3, 12), (3, 12)]


def test_transformer_lens_names():
    assert transformer_lens_hook("product", 3) == "blocks.3.mlp.hook_post"
    assert transformer_lens_hook("gate", 0) == "blocks.0.mlp.hook_pre"
    with pytest.raises(ValueError, match="no hook for site 'act'"):
        transformer_lens_hook("act", 1)
    with pytest.raises(ValueError, match="unknown neuron site"):
        transformer_lens_hook("up", 1)


def test_export_styles():
    assert export_neurons(NEURONS) == [[0, 7], [3, 12], [3, 40]]
    assert export_neurons(NEURONS, "product", "transformer_lens") == {
        "blocks.0.mlp.hook_post": [7], "blocks.3.mlp.hook_post": [12, 40]}
    assert export_neurons(NEURONS, "gate", "nnsight") == {
        "model.model.layers[0].mlp.gate_proj.output": [7], "model.model.layers[3].mlp.gate_proj.output": [12, 40]}
    assert list(export_neurons(NEURONS, "act", "nnsight")) == [nnsight_path("act", 0), nnsight_path("act", 3)]
    with pytest.raises(ValueError, match="no hook for site 'act'"):
        export_neurons(NEURONS, "act", "transformer_lens")
    with pytest.raises(ValueError, match="unknown export style"):
        export_neurons(NEURONS, style="pyvene")


def _module(hf_model, path: str):
    """The torch module an nnsight path names: nnsight's `model` is the HF model itself."""
    obj = hf_model
    for name, index in re.findall(r"\.?(\w+)(?:\[(\d+)\])?", path.removeprefix("model.")):
        obj = getattr(obj, name)
        if index:
            obj = obj[int(index)]
    return obj


@pytest.mark.parametrize("site", sorted(SITE_NAMES))
def test_nnsight_paths_hold_the_sites_activations(tiny_models, site):
    import torch

    hf, cfg, params = tiny_models["llama2"]
    prompt = [5, 9, 2, 33, 17]
    layer = cfg.n_layers - 1
    path = nnsight_path(site, layer)
    module_path, what = path.rsplit(".", 1)
    captured = {}

    def hook(module, args, output):
        captured["x"] = (args[0] if what == "input" else output)[0, -1].detach().numpy()

    handle = _module(hf, module_path).register_forward_hook(hook)
    try:
        with torch.no_grad():
            hf(torch.tensor([prompt]))
    finally:
        handle.remove()
    ours = np.asarray(site_activations(params, cfg, [prompt], site=site))[0, layer]
    np.testing.assert_allclose(captured["x"], ours, rtol=1e-4, atol=1e-5)
