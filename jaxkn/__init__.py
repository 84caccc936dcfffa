# ruff: noqa: I001  (imports are grouped by pipeline stage, not alphabetically)
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

# The public surface, by pipeline stage (everything else is reached through its module).
# 1. Models: configs, checkpoints, the pure forward with its one neuron seam, the Flax NNX view, decoding.
from jaxkn.config import ModelConfig, RopeScaling, UnsupportedConfigError  # noqa: E402
from jaxkn.convert.loading import load_default_model, load_model  # noqa: E402
from jaxkn.model import ContextLengthError, ForwardOutput, forward, init_params, param_shapes, summarize  # noqa: E402
from jaxkn.site import SiteEdit, scale_edit  # noqa: E402
from jaxkn.tokenizer import Tokenizer  # noqa: E402
from jaxkn.flax_model import FlaxModel, flax_model, load_flax_model, params_of  # noqa: E402
from jaxkn.generate import Generation, generate, greedy_generate  # noqa: E402
# 2. Attribution: integrated gradients over every layer's neurons.
from jaxkn.attribution import (  # noqa: E402
    AttributionConfig,
    AttributionInputError,
    Attributions,
    attribute,
    attribute_ids,
)
# 3. Knowledge neurons: coarse / refined sets, shared neurons, the EleutherAI-style workflow.
from jaxkn.neurons import (  # noqa: E402
    SharedNeuron,
    adaptive_refine,
    coarse_neurons,
    fact_specific,
    refine_mask,
    refined_neurons,
    shared_neurons,
    to_eleuther,
)
from jaxkn.knowledge_neurons import KnowledgeNeurons  # noqa: E402
# 4. Interventions (activation patches, pure) and weight edits.
from jaxkn.interventions import (  # noqa: E402
    Intervention,
    answer_probability,
    compose,
    enhance,
    generate_under,
    intervention_effect,
    random_control,
    random_neurons,
    scale_neurons,
    suppress,
    sweep,
    sweep_factors,
    sweep_sets,
)
from jaxkn.weight_edits import edit_toward_token, erase_neurons  # noqa: E402
# 5. Recall: KN scores and single-/two-hop levels.
from jaxkn.recall import (  # noqa: E402
    hop_recall, kn_score, relative_score, single_hop_level, site_activations, two_hop_level,
)
# 6. Scale-out.
from jaxkn.sharding import make_mesh, shard_params  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    # models
    "ModelConfig", "RopeScaling", "UnsupportedConfigError", "load_model", "load_default_model", "ContextLengthError",
    "ForwardOutput", "forward", "init_params", "param_shapes", "summarize", "SiteEdit", "scale_edit", "Tokenizer",
    "FlaxModel", "flax_model", "load_flax_model", "params_of", "Generation", "generate", "greedy_generate",
    # attribution
    "AttributionConfig", "Attributions", "AttributionInputError", "attribute", "attribute_ids",
    # knowledge neurons
    "KnowledgeNeurons", "SharedNeuron", "adaptive_refine", "coarse_neurons", "fact_specific", "refine_mask",
    "refined_neurons", "shared_neurons", "to_eleuther",
    # interventions and edits
    "Intervention", "answer_probability", "compose", "enhance", "generate_under", "intervention_effect",
    "random_control", "random_neurons", "scale_neurons", "suppress", "sweep", "sweep_factors", "sweep_sets",
    "edit_toward_token", "erase_neurons",
    # recall
    "hop_recall", "kn_score", "relative_score", "single_hop_level", "site_activations", "two_hop_level",
    # scale-out
    "make_mesh", "shard_params",
]
