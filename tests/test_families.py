"""Qwen2/2.5, Qwen3, Gemma 2 and Gemma 3 against transformers: logits, decoding, fast attribution, conversion.

Tiny random models (float32, eager attention) with weights drawn large enough that Gemma 2's soft caps bite,
and sliding windows (4) shorter than the prompts, so every family option changes the numbers being compared.
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from attribution_helpers import ANSWERS, PROMPTS, assert_batch_close
from conftest import tiny_jax_from_hf

from jaxkn.attribution import AttributionConfig, attribute_ids
from jaxkn.config import ModelConfig, UnsupportedConfigError
from jaxkn.convert.gguf import convert_gguf
from jaxkn.convert.hf import convert_hf
from jaxkn.generate import greedy_generate
from jaxkn.model import forward

BASE = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, max_position_embeddings=128, rms_norm_eps=1e-6)
FAMILIES = {
    # Qwen2 with its window on: layer 0 global, layers 1-2 windowed (max_window_layers=1)
    "qwen2": ("Qwen2", dict(use_sliding_window=True, sliding_window=4, max_window_layers=1)),
    "qwen3": ("Qwen3", dict(tie_word_embeddings=True)),
    "gemma2": ("Gemma2", dict(sliding_window=4, query_pre_attn_scalar=12, attn_logit_softcapping=1.0,
                              final_logit_softcapping=1.5)),
    "gemma3": ("Gemma3Text", dict(
        sliding_window=4, sliding_window_pattern=2, query_pre_attn_scalar=8, final_logit_softcapping=None,
        rope_parameters={"full_attention": dict(rope_type="linear", factor=2.0, rope_theta=1e6),
                         "sliding_attention": dict(rope_type="default", rope_theta=1e4)})),
}
TOKENS = np.random.RandomState(0).randint(0, 64, size=(3, 12))
LENGTHS = [12, 7, 5]


def make_hf(family: str, seed: int = 0, **overrides):
    """A tiny transformers model of `family`, its weights redrawn at a scale where every option matters."""
    import transformers

    prefix, kw = FAMILIES[family]
    config_cls = getattr(transformers, f"{prefix}Config")
    model_cls = getattr(transformers, f"{prefix.removesuffix('Text')}ForCausalLM")
    config = config_cls(**BASE, **{**kw, **overrides})
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # Gemma stores w of (1 + w); the others the multiplier itself
                p.copy_(0.1 * torch.randn_like(p) + (0.0 if family.startswith("gemma") else 1.0))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def families():
    """family -> (hf_model, cfg, params), built once."""
    out = {}
    for family in FAMILIES:
        hf = make_hf(family)
        out[family] = (hf,) + tiny_jax_from_hf(hf)
    return out


def hf_logits(hf, tokens):
    with torch.no_grad():
        return hf(torch.tensor(np.asarray(tokens))).logits.numpy()


def assert_relative(got, ref, tol=1e-4, what=""):
    err = np.abs(np.asarray(got, np.float64) - ref).max() / np.abs(ref).max()
    assert err <= tol, f"{what}: relative error {err:.2e} > {tol}"


def padded(side: str):
    tokens, valid = np.zeros_like(TOKENS), np.zeros(TOKENS.shape, bool)
    for row, n in enumerate(LENGTHS):
        cols = slice(0, n) if side == "right" else slice(TOKENS.shape[1] - n, None)
        tokens[row, cols], valid[row, cols] = TOKENS[row, :n], True
    return tokens, valid


def test_configs_read_the_family_options(families):
    cfgs = {f: families[f][1] for f in FAMILIES}
    assert cfgs["qwen2"].qkv_bias and cfgs["qwen2"].layer_types == ("full_attention",) + ("sliding_attention",) * 2
    assert cfgs["qwen3"].qk_norm and not cfgs["qwen3"].qkv_bias and cfgs["qwen3"].tie_embeddings
    g2, g3 = cfgs["gemma2"], cfgs["gemma3"]
    assert g2.layer_types == ("sliding_attention", "full_attention", "sliding_attention") == g3.layer_types
    assert (g2.attn_softcap, g2.final_softcap, g2.query_pre_attn_scalar) == (1.0, 1.5, 12.0)
    assert g3.qk_norm and g3.attn_softcap is None and g3.rope_local_theta == 1e4
    assert g3.rope_theta == 1e6 and g3.rope_scaling.factor == 2.0


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_logits_match_transformers_on_padded_batches(families, family, side):
    hf, cfg, params = families[family]
    tokens, valid = padded(side)
    logits = np.asarray(forward(params, tokens, cfg, valid=valid).logits)
    for row, n in enumerate(LENGTHS):
        assert_relative(logits[row][valid[row]], hf_logits(hf, TOKENS[row : row + 1, :n])[0], what=f"row {row}")


@pytest.mark.parametrize("family,change", [
    ("qwen2", dict(sliding_window=None, layer_types=None)),
    ("gemma2", dict(sliding_window=None, layer_types=None)),
    ("gemma2", dict(attn_softcap=None)),
    ("gemma2", dict(final_softcap=None)),
    ("gemma2", dict(query_pre_attn_scalar=None)),
    ("gemma3", dict(rope_local_theta=None)),
    ("gemma3", dict(rope_scaling=None)),
    ("gemma3", dict(sliding_window=None, layer_types=None)),
])
def test_each_family_option_changes_the_logits(families, family, change):
    """The parity above is not vacuous: dropping any one option moves the logits well beyond the tolerance."""
    _, cfg, params = families[family]
    plain = np.asarray(forward(params, TOKENS, cfg).logits)
    changed = np.asarray(forward(params, TOKENS, cfg.replace(**change)).logits)
    assert np.abs(plain - changed).max() / np.abs(plain).max() > 1e-2


@pytest.mark.parametrize("family", ["gemma2", "qwen2"])
def test_neuron_site_is_what_down_reads(families, family):
    """`product` is the input of down_proj (GeGLU: gelu_tanh(gate) * up): scaling it by 0 on a layer equals
    zeroing down_proj's input in torch; `act` is the activation of the captured `gate`."""
    from jaxkn.site import scale_edit

    hf, cfg, params = families[family]
    layer = 1
    scale = jnp.ones((cfg.n_layers, cfg.d_ff)).at[layer].set(0.0)
    got = forward(params, TOKENS, cfg, edits=scale_edit(scale, jnp.ones(TOKENS.shape))).logits
    handle = hf.model.layers[layer].mlp.down_proj.register_forward_pre_hook(lambda m, a: (torch.zeros_like(a[0]),))
    try:
        ref = hf_logits(hf, TOKENS)
    finally:
        handle.remove()
    assert_relative(got, ref)
    out = forward(params, TOKENS, cfg, capture=("gate", "act"))
    activation = jax.nn.silu if cfg.hidden_act == "silu" else lambda g: jax.nn.gelu(g, approximate=True)
    np.testing.assert_allclose(out.captures["act"], activation(out.captures["gate"]), atol=1e-6)


@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_bfloat16_params_track_transformers_in_bfloat16(families, family):
    """bfloat16 end to end (embedding scale rounded to bf16, (1 + w) norms in float32, soft caps): no further
    from float32 than HF's own bfloat16 model is (within a factor 2), and close to it."""
    hf, cfg, params = families[family]
    bf = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params)
    got = forward(bf, TOKENS, cfg.replace(param_dtype="bfloat16")).logits
    assert got.dtype == jnp.bfloat16
    ref32 = hf_logits(hf, TOKENS)
    with torch.no_grad():  # a copy: the module fixture's float32 weights must stay exact for the other tests
        ref16 = copy.deepcopy(hf).to(torch.bfloat16)(torch.tensor(TOKENS)).logits.float().numpy()
    ours, theirs = np.abs(np.asarray(got, np.float32) - ref32).max(), np.abs(ref16 - ref32).max()
    assert ours <= 2 * theirs, (ours, theirs)
    assert np.abs(np.asarray(got, np.float32) - ref16).max() <= 0.1 * np.abs(ref32).max()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_greedy_generation_is_token_identical(families, family):
    hf, cfg, params = families[family]
    prompts = [list(TOKENS[0, :7]), list(TOKENS[1, :3]), list(TOKENS[2, :10])]
    got = greedy_generate(params, cfg, prompts, 8)
    for prompt, tokens in zip(prompts, got):
        ids = torch.tensor([prompt])
        with torch.no_grad():  # an explicit mask: HF would otherwise take prompt tokens equal to pad_id for padding
            out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                              eos_token_id=None, pad_token_id=0)
        assert tokens == out[0, len(prompt):].tolist()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fast_attribution_equals_reference(families, family):
    _, cfg, params = families[family]
    ref, fast = (attribute_ids(params, cfg, PROMPTS, ANSWERS, AttributionConfig(method=m, steps=5))
                 for m in ("reference", "fast"))
    assert np.asarray(ref.scores).shape[1] == cfg.n_layers
    assert_batch_close(ref.scores, fast.scores, 1e-4)
    np.testing.assert_allclose(fast.prob_actual, ref.prob_actual, rtol=1e-5)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hf_safetensors_round_trip(families, family, tmp_path):
    hf, cfg, _ = families[family]
    hf.save_pretrained(tmp_path)
    got_cfg, params, _ = convert_hf(tmp_path)
    assert got_cfg == cfg
    logits = forward(jax.tree_util.tree_map(jnp.asarray, params), TOKENS, got_cfg).logits
    assert_relative(logits, hf_logits(hf, TOKENS))


# ---- GGUF --------------------------------------------------------------------------------------------

_GGUF_ARCH = {"qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2", "gemma3": "gemma3"}
_LAYER_NAMES = dict(q_proj="attn_q", k_proj="attn_k", v_proj="attn_v", o_proj="attn_output",
                    gate_proj="ffn_gate", up_proj="ffn_up", down_proj="ffn_down", q_norm="attn_q_norm",
                    k_norm="attn_k_norm", input_layernorm="attn_norm")
_QWEN_NORMS = dict(post_attention_layernorm="ffn_norm")
_GEMMA_NORMS = dict(post_attention_layernorm="post_attention_norm", pre_feedforward_layernorm="ffn_norm",
                    post_feedforward_layernorm="post_ffw_norm")


def gguf_tensors(family: str, hf) -> dict[str, np.ndarray]:
    """llama.cpp's tensor layout for the family: its names, no Q/K permutation, Gemma norms stored as 1 + w."""
    gemma = family.startswith("gemma")
    names = {**_LAYER_NAMES, **(_GEMMA_NORMS if gemma else _QWEN_NORMS)}
    out = {}
    for key, value in hf.state_dict().items():
        value = value.detach().numpy().astype(np.float32)
        if gemma and key.endswith("norm.weight"):
            value = value + 1.0
        parts = key.split(".")
        if key == "model.embed_tokens.weight":
            out["token_embd.weight"] = value
        elif key == "model.norm.weight":
            out["output_norm.weight"] = value
        elif key == "lm_head.weight":
            if not hf.config.tie_word_embeddings:
                out["output.weight"] = value
        else:
            out[f"blk.{parts[2]}.{names[parts[-2]]}.{parts[-1]}"] = value
    return out


def write_gguf(path, family: str, hf, extra=()):
    import gguf

    c = hf.config
    writer = gguf.GGUFWriter(str(path), _GGUF_ARCH[family])
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_key_length(c.head_dim)
    writer.add_value_length(c.head_dim)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    rope = c.rope_parameters.get("full_attention", c.rope_parameters)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    if family == "gemma2":
        writer.add_sliding_window(c.sliding_window)
        writer.add_attn_logit_softcapping(c.attn_logit_softcapping)
        writer.add_final_logit_softcapping(c.final_logit_softcapping)
        writer.add_attention_scale(c.query_pre_attn_scalar ** -0.5)  # 12 != head_dim: the scalar must be read
    if family == "gemma3":  # query_pre_attn_scalar = head_dim: llama.cpp's rule for every size but 27B
        writer.add_sliding_window(c.sliding_window)
        writer.add_sliding_window_pattern([t == "sliding_attention" for t in c.layer_types])
        writer.add_rope_freq_base_swa(float(c.rope_parameters["sliding_attention"]["rope_theta"]))
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    for key, value in extra:
        writer.add_uint32(key, value)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["<s>", "</s>"] + [chr(ord("a") + i % 26) * (1 + i // 26) for i in range(c.vocab_size - 2)])
    writer.add_token_merges(["a a"])
    writer.add_token_types([3, 3] + [1] * (c.vocab_size - 2))
    for name, array in gguf_tensors(family, hf).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_gguf_round_trip(families, family, tmp_path):
    hf, cfg, _ = families[family]
    if family == "qwen2":  # llama.cpp has no Qwen2 window metadata (real Qwen2.5 files run without a window)
        hf = make_hf("qwen2", use_sliding_window=False)
        cfg = ModelConfig.from_hf_dict(hf.config.to_dict())
    write_gguf(tmp_path / "tiny.gguf", family, hf)
    got, params, _ = convert_gguf(tmp_path / "tiny.gguf")
    assert got.rms_norm_eps == pytest.approx(cfg.rms_norm_eps, rel=1e-6)  # GGUF stores it in float32
    keep = ("bos_token_id", "eos_token_id", "pad_token_id", "rms_norm_eps")
    assert got.replace(**{k: getattr(cfg, k) for k in keep}) == cfg
    logits = forward(jax.tree_util.tree_map(jnp.asarray, params), TOKENS, got).logits
    assert_relative(logits, hf_logits(hf, TOKENS))


def test_gguf_unsupported_family_key_is_named(families, tmp_path):
    write_gguf(tmp_path / "x.gguf", "gemma2", families["gemma2"][0], extra=[("gemma2.expert_count", 4)])
    with pytest.raises(UnsupportedConfigError, match=r"gemma2\.expert_count"):
        convert_gguf(tmp_path / "x.gguf")


# ---- config errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_unsupported_key_is_named(families, family):
    hf_dict = dict(families[family][0].config.to_dict(), some_new_option=3)
    with pytest.raises(UnsupportedConfigError, match=r"unsupported HF config keys .*some_new_option"):
        ModelConfig.from_hf_dict(hf_dict)


def test_unknown_architecture_lists_the_supported_ones(families):
    hf_dict = dict(families["qwen3"][0].config.to_dict(), model_type="phi3")
    with pytest.raises(UnsupportedConfigError, match=r"model_type='phi3'.*qwen2.*qwen3.*gemma2.*gemma3_text"):
        ModelConfig.from_hf_dict(hf_dict)


@pytest.mark.parametrize("family,change,match", [
    ("gemma2", dict(hidden_activation="gelu"), "hidden_activation"),
    ("gemma3", dict(use_bidirectional_attention=True), "use_bidirectional_attention"),
    ("qwen3", dict(attention_bias=True), "attention_bias"),
    ("qwen2", dict(hidden_act="gelu"), "hidden_act"),
])
def test_unsupported_family_values_are_named(families, family, change, match):
    with pytest.raises(UnsupportedConfigError, match=match):
        ModelConfig.from_hf_dict(dict(families[family][0].config.to_dict(), **change))


def test_pallas_mlp_refuses_geglu(families):
    with pytest.raises(UnsupportedConfigError, match="mlp_impl='xla'"):
        families["gemma2"][1].replace(mlp_impl="pallas")


def test_multimodal_gemma3_folder_converts_as_its_text_model(families, tmp_path):
    """A Gemma3ForConditionalGeneration folder: config from text_config, weights from language_model.*, the
    vision tower and projector skipped; logits equal HF's multimodal model on text-only input."""
    import transformers

    text_hf, text_cfg, _ = families["gemma3"]
    vision = dict(model_type="siglip_vision_model", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, image_size=28, patch_size=14)
    config = transformers.Gemma3Config(text_config=text_hf.config.to_dict(), vision_config=vision,
                                       mm_tokens_per_image=1, image_token_index=63, boi_token_index=61,
                                       eoi_token_index=62)
    config.text_config._attn_implementation = "eager"
    model = transformers.Gemma3ForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.model.language_model.load_state_dict(text_hf.model.state_dict())
    assert ModelConfig.from_hf_dict(config.to_dict()) == text_cfg
    model.save_pretrained(tmp_path)
    cfg, params, _ = convert_hf(tmp_path)
    assert cfg == text_cfg
    logits = forward(jax.tree_util.tree_map(jnp.asarray, params), TOKENS, cfg).logits
    assert_relative(logits, hf_logits(model, TOKENS))


# ---- real configs ------------------------------------------------------------------------------------

REAL_CONFIGS = {  # the published config.json files (transformers 4 spellings), with their parameter counts
    "gemma-2-2b": (2_614_341_888, dict(
        architectures=["Gemma2ForCausalLM"], attention_bias=False, attention_dropout=0.0, attn_logit_softcapping=50.0,
        bos_token_id=2, cache_implementation="hybrid", eos_token_id=[1, 107], final_logit_softcapping=30.0,
        head_dim=256, hidden_act="gelu_pytorch_tanh", hidden_activation="gelu_pytorch_tanh", hidden_size=2304,
        initializer_range=0.02, intermediate_size=9216, max_position_embeddings=8192, model_type="gemma2",
        num_attention_heads=8, num_hidden_layers=26, num_key_value_heads=4, pad_token_id=0,
        query_pre_attn_scalar=256, rms_norm_eps=1e-06, rope_theta=10000.0, sliding_window=4096,
        torch_dtype="float32", transformers_version="4.42.4", use_cache=True, vocab_size=256000)),
    "gemma-3-1b-it": (999_885_952, dict(
        architectures=["Gemma3ForCausalLM"], attention_bias=False, attention_dropout=0.0, attn_logit_softcapping=None,
        bos_token_id=2, cache_implementation="hybrid", eos_token_id=[1, 106], final_logit_softcapping=None,
        head_dim=256, hidden_activation="gelu_pytorch_tanh", hidden_size=1152, initializer_range=0.02,
        intermediate_size=6912, max_position_embeddings=32768, model_type="gemma3_text", num_attention_heads=4,
        num_hidden_layers=26, num_key_value_heads=1, pad_token_id=0, query_pre_attn_scalar=256, rms_norm_eps=1e-06,
        rope_local_base_freq=10000, rope_scaling=None, rope_theta=1000000, sliding_window=512,
        sliding_window_pattern=6, torch_dtype="bfloat16", transformers_version="4.50.0.dev0", use_cache=True,
        vocab_size=262144)),
    "Qwen2.5-0.5B-Instruct": (494_032_768, dict(
        architectures=["Qwen2ForCausalLM"], attention_dropout=0.0, bos_token_id=151643, eos_token_id=151645,
        hidden_act="silu", hidden_size=896, initializer_range=0.02, intermediate_size=4864,
        max_position_embeddings=32768, max_window_layers=21, model_type="qwen2", num_attention_heads=14,
        num_hidden_layers=24, num_key_value_heads=2, rms_norm_eps=1e-06, rope_theta=1000000.0, sliding_window=32768,
        tie_word_embeddings=True, torch_dtype="bfloat16", transformers_version="4.43.1", use_cache=True,
        use_sliding_window=False, vocab_size=151936)),
    "Qwen3-0.6B": (596_049_920, dict(
        architectures=["Qwen3ForCausalLM"], attention_bias=False, attention_dropout=0.0, bos_token_id=151643,
        eos_token_id=151645, head_dim=128, hidden_act="silu", hidden_size=1024, initializer_range=0.02,
        intermediate_size=3072, max_position_embeddings=40960, max_window_layers=28, model_type="qwen3",
        num_attention_heads=16, num_hidden_layers=28, num_key_value_heads=8, rms_norm_eps=1e-06, rope_scaling=None,
        rope_theta=1000000, sliding_window=None, tie_word_embeddings=True, torch_dtype="bfloat16",
        transformers_version="4.51.0", use_cache=True, use_sliding_window=False, vocab_size=151936)),
}


@pytest.mark.parametrize("name", sorted(REAL_CONFIGS))
def test_real_configs_read_with_published_parameter_counts(name):
    """Real config.json files parse (every key known) and give the published sizes, at no memory cost."""
    from jaxkn.model import init_params, param_shapes

    count, hf_dict = REAL_CONFIGS[name]
    cfg = ModelConfig.from_hf_dict(hf_dict)
    shapes = jax.tree_util.tree_leaves(param_shapes(cfg), is_leaf=lambda s: isinstance(s, tuple))
    assert sum(int(np.prod(s)) for s in shapes) == count
    if name == "gemma-3-1b-it":  # 5 local layers per global one, local RoPE base 1e4, window 512
        assert cfg.layer_types[:6] == ("sliding_attention",) * 5 + ("full_attention",)
        assert (cfg.rope_local_theta, cfg.rope_theta, cfg.sliding_window) == (1e4, 1e6, 512)
        abstract = jax.eval_shape(lambda k: init_params(cfg, k), jax.random.PRNGKey(0))
        out = jax.eval_shape(lambda p: forward(p, jnp.zeros((1, 16), jnp.int32), cfg).logits, abstract)
        assert out.shape == (1, 16, cfg.vocab_size)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_config_json_round_trip(families, family, tmp_path):
    """jaxkn's own config file (what convert's CLI writes beside the orbax params) keeps every family option."""
    cfg = families[family][1]
    cfg.save(tmp_path / "config.json")
    loaded = ModelConfig.load(tmp_path / "config.json")
    assert loaded == cfg and hash(loaded) == hash(cfg)
