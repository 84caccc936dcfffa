"""jaxkn's attributions equal an independent PyTorch implementation (EleutherAI-style loop, and captum)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from attribution_helpers import assert_same_coarse_sets, relative_error

from jaxkn.attribution import AttributionConfig, answer_token_ids, attribute_ids

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
torch_baseline = pytest.importorskip("torch_baseline")

PROMPT, ANSWER = [1, 5, 9, 13, 7, 22, 8], [17, 4]
FACTS = [("The capital of France is", "Paris"), ("The chemical symbol of gold is", "Au"),
         ("The Eiffel Tower is located in the city of", "Paris, France")]
SMOL_LAYERS = (1, 15, 29)


@pytest.fixture(autouse=True, scope="module")
def two_threads():
    import torch

    torch.set_num_threads(2)


@pytest.mark.parametrize("kw", [dict(), dict(site="gate", baseline="amig"),
                                dict(quadrature="gauss_legendre", steps=6, baseline_form="activation",
                                     baseline="amig")])
def test_tiny_matches_torch_loop(tiny, kw):
    hf, cfg, params = tiny
    ours = attribute_ids(params, cfg, [PROMPT], [ANSWER], AttributionConfig(**kw)).scores[0]
    theirs = torch_baseline.attribute_fact(hf, PROMPT, ANSWER, **kw)
    assert relative_error(theirs, ours) <= 1e-5
    assert_same_coarse_sets(theirs, ours)


@pytest.mark.parametrize("kw", [dict(), dict(site="gate", quadrature="gauss_legendre", steps=6)])
def test_tiny_matches_captum(tiny_models, kw):
    hf, cfg, params = tiny_models["llama3"]
    ours = attribute_ids(params, cfg, [PROMPT], [ANSWER], AttributionConfig(**kw)).scores[0]
    theirs = torch_baseline.captum_attribute_fact(hf, PROMPT, ANSWER, **kw)
    assert relative_error(theirs, ours) <= 1e-5


@pytest.fixture(scope="module")
def smol_facts(smollm2):
    _, _, tok = smollm2
    return [answer_token_ids(tok, p, a) for p, a in FACTS]


@pytest.mark.slow
def test_smollm2_matches_torch_loop(smollm2, smollm2_hf, smol_facts):
    """Real facts, m = 20 left Riemann, three layers (low, middle, top)."""
    cfg, params, _ = smollm2
    config = AttributionConfig(layers=SMOL_LAYERS, method="reference")
    ours = np.asarray(attribute_ids(params, cfg, [p for p, _ in smol_facts], [a for _, a in smol_facts],
                                    config).scores)
    for i, (prompt, answer) in enumerate(smol_facts):
        theirs = torch_baseline.attribute_fact(smollm2_hf, prompt, answer, layers=SMOL_LAYERS)
        assert relative_error(theirs, ours[i]) <= 1e-3, FACTS[i]
        assert_same_coarse_sets(theirs, ours[i], threshold=0.2)


@pytest.mark.slow
def test_smollm2_gauss_legendre_8_vs_riemann_20(smollm2, smol_facts):
    """Gauss-Legendre with 8 points against left Riemann with 20 on the same facts and layers.

    Measured (SmolLM2-135M-Instruct Q4_1, layers 1, 15, 29): the coarse sets at t = 0.2 agree on every fact
    for all neurons further than 2% of the max from the threshold (a wider margin than §9's 1e-3: the two
    rules are different approximations, not the same sum reordered); GL-8's completeness error is smaller.
    """
    cfg, params, _ = smollm2
    prompts, answers = [p for p, _ in smol_facts], [a for _, a in smol_facts]
    riemann = attribute_ids(params, cfg, prompts, answers, AttributionConfig(layers=SMOL_LAYERS, method="reference"))
    gauss = attribute_ids(params, cfg, prompts, answers, AttributionConfig(
        layers=SMOL_LAYERS, method="reference", quadrature="gauss_legendre", steps=8))
    for i in range(len(FACTS)):
        assert_same_coarse_sets(np.asarray(riemann.scores[i]), np.asarray(gauss.scores[i]), margin=0.02)
    assert np.asarray(gauss.completeness_error).max() <= np.asarray(riemann.completeness_error).max()
