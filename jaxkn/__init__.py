"""jaxkn: knowledge neurons in JAX.

Pipeline: convert (checkpoints -> params) -> model (pure forward with a neuron seam) -> attribution
(integrated gradients) -> neurons (knowledge-neuron sets) -> interventions / recall -> experiments.
"""

from jaxkn.attribution import AttributionConfig, AttributionInputError, Attributions, attribute, attribute_ids
from jaxkn.config import ModelConfig, RopeScaling, UnsupportedConfigError
from jaxkn.edits import edit_toward_token, erase_neurons
from jaxkn.interventions import (
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
from jaxkn.loading import load_default_model, load_model
from jaxkn.model import ContextLengthError, ForwardOutput, forward, init_params, param_shapes, summarize
from jaxkn.neurons import KnowledgeNeurons, adaptive_refine, coarse_neurons, refined_neurons, to_eleuther
from jaxkn.recall import kn_score, relative_score, site_activations
from jaxkn.site import SiteEdit, scale_edit
from jaxkn.tokenizer import Tokenizer

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
