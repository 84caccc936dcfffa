"""jaxkn: knowledge neurons in JAX.

Pipeline: convert (checkpoints -> params) -> model (pure forward with a neuron seam) -> attribution
(integrated gradients) -> neurons (knowledge-neuron sets) -> interventions / recall -> experiments.
"""

import os as _os

# In a source checkout, `jaxkn.kernels`, `jaxkn.convert` and `jaxkn.experiments` live in top-level folders that
# setuptools maps under `jaxkn` at install time. When this `jaxkn/` folder is imported straight from the checkout
# (e.g. `python -m jaxkn.experiments.two_hop` run from the repo root, where it shadows a non-editable install),
# the checkout root is searched too, so those subpackages resolve to the files an install would hold.
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "experiments")) and all(
    _os.path.isfile(_os.path.join(_checkout, sub, "__init__.py")) for sub in ("kernels", "convert", "experiments")
):
    __path__.append(_checkout)

# The public surface (re-exported; everything else is reached through its module).
from jaxkn.attribution import (  # noqa: E402
    AttributionConfig,
    AttributionInputError,
    Attributions,
    attribute,
    attribute_ids,
)
from jaxkn.config import ModelConfig, RopeScaling, UnsupportedConfigError  # noqa: E402
from jaxkn.convert.loading import load_default_model, load_model  # noqa: E402
from jaxkn.edits import edit_toward_token, erase_neurons  # noqa: E402
from jaxkn.interventions import (  # noqa: E402
    Intervention,
    answer_probability,
    compose,
    enhance,
    random_control,
    scale_neurons,
    suppress,
    sweep_factors,
    sweep_sets,
)
from jaxkn.model import (  # noqa: E402
    ContextLengthError,
    ForwardOutput,
    forward,
    init_params,
    param_shapes,
    summarize,
)
from jaxkn.neurons import KnowledgeNeurons, adaptive_refine, coarse_neurons, refined_neurons, to_eleuther  # noqa: E402
from jaxkn.recall import kn_score, relative_score, site_activations  # noqa: E402
from jaxkn.site import SiteEdit, scale_edit  # noqa: E402
from jaxkn.tokenizer import Tokenizer  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ModelConfig", "RopeScaling", "UnsupportedConfigError", "ContextLengthError", "ForwardOutput", "forward",
    "init_params", "param_shapes", "summarize", "SiteEdit", "scale_edit",
    "load_model", "load_default_model", "Tokenizer",
    "Intervention", "answer_probability", "compose", "enhance", "random_control", "scale_neurons", "suppress",
    "sweep_factors", "sweep_sets", "kn_score", "relative_score", "site_activations", "edit_toward_token",
    "erase_neurons",
    "AttributionConfig", "Attributions", "AttributionInputError", "attribute", "attribute_ids",
    "KnowledgeNeurons", "adaptive_refine", "coarse_neurons", "refined_neurons", "to_eleuther",
]
