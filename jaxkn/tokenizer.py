"""Text <-> token ids for jaxkn models, without torch or transformers.

`Tokenizer` wraps a `tokenizers.Tokenizer` (the Rust library transformers itself uses) plus the few settings a
checkpoint carries beside it: the special tokens, whether a BOS is prepended, and the chat template. It is built

- from an HF folder (`tokenizer.json` + `tokenizer_config.json`, as `save_pretrained` writes them),
- from GGUF metadata (`tokenizer.ggml.*`), for byte-level BPE vocabularies (`tokenizer.ggml.model == "gpt2"`,
  SmolLM2's), the way transformers' GGUF loader builds them: byte-level pre-tokenizer and decoder, the file's
  merges, control tokens added whole as special tokens.

`save(dir)` writes the same two HF files, so `Tokenizer.load(dir)` is `from_hf_dir(dir)`. Chat templates are
rendered with jinja2's sandboxed environment, as transformers does.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import AddedToken, decoders, models, pre_tokenizers

# GGUF token types (llama.cpp's llama_token_type): 3 = control (special), 4 = user-defined (added, not special).
_GGUF_CONTROL, _GGUF_USER_DEFINED = 3, 4
SUPPORTED_GGUF_TOKENIZERS = ("gpt2",)


class TokenizerError(ValueError):
    """A tokenizer cannot be built or used as asked."""


@functools.cache
def _byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (the alphabet of byte-level BPE vocabularies)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


class Tokenizer:
    """A tokenizer plus its special tokens and chat template.

    Args:
      backend: the `tokenizers.Tokenizer` doing the work (its post-processor must not add special tokens).
      bos_token / eos_token / pad_token: special token strings (None when the model has none).
      chat_template: a jinja2 template (HF's `chat_template`), or None.
      add_bos: whether `encode` prepends BOS by default (SmolLM2: no).
    """

    def __init__(self, backend: tokenizers.Tokenizer, *, bos_token: str | None = None, eos_token: str | None = None,
                 pad_token: str | None = None, chat_template: str | None = None, add_bos: bool = False):
        self.backend = backend
        self.bos_token, self.eos_token, self.pad_token = bos_token, eos_token, pad_token
        self.chat_template = chat_template
        self.add_bos = add_bos

    # ---- ids -----------------------------------------------------------------------------------------
    def _id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    @property
    def bos_id(self) -> int | None:
        return self._id(self.bos_token)

    @property
    def eos_id(self) -> int | None:
        return self._id(self.eos_token)

    @property
    def pad_id(self) -> int | None:
        return self._id(self.pad_token)

    @property
    def vocab_size(self) -> int:
        """Every id the tokenizer can produce (base vocabulary plus added tokens)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    # ---- text <-> ids --------------------------------------------------------------------------------
    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids of `text`; special tokens written in the text (e.g. `<|im_start|>`) stay whole."""
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if self.add_bos if add_bos is None else add_bos:
            if self.bos_id is None:
                raise TokenizerError("add_bos=True but this tokenizer has no BOS token")
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                            **extra) -> str:
        """Renders `messages` ([{"role": ..., "content": ...}]) with the model's chat template, as text."""
        if not self.chat_template:
            raise TokenizerError("this model's tokenizer has no chat template; write the prompt as plain text")
        return _compile_template(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, bos_token=self.bos_token or "",
            eos_token=self.eos_token or "", **extra)

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, bos={self.bos_token!r}, eos={self.eos_token!r}, "
                f"pad={self.pad_token!r}, chat_template={'yes' if self.chat_template else 'no'})")

    # ---- files ---------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Writes `tokenizer.json` and `tokenizer_config.json` (readable by transformers too)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / "tokenizer.json"))
        config = dict(bos_token=self.bos_token, eos_token=self.eos_token, pad_token=self.pad_token,
                      add_bos_token=self.add_bos, chat_template=self.chat_template,
                      tokenizer_class="PreTrainedTokenizerFast")
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        return cls.from_hf_dir(directory)

    @classmethod
    def from_hf_dir(cls, directory: str | Path) -> Tokenizer:
        """Reads an HF tokenizer folder: `tokenizer.json` (required) and `tokenizer_config.json` (optional)."""
        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"no tokenizer.json in {directory}: jaxkn reads fast (tokenizers) tokenizers only")
        backend = tokenizers.Tokenizer.from_file(str(path))
        backend.no_padding()
        backend.no_truncation()
        cfg_path = directory / "tokenizer_config.json"
        config = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        template = config.get("chat_template")
        jinja_path = directory / "chat_template.jinja"  # transformers >= 4.43 may store it on its own
        if template is None and jinja_path.is_file():
            template = jinja_path.read_text()
        if isinstance(template, list):  # several named templates: use the default one
            template = {t["name"]: t["template"] for t in template}.get("default")
        return cls(backend, bos_token=_token_str(config.get("bos_token")),
                   eos_token=_token_str(config.get("eos_token")), pad_token=_token_str(config.get("pad_token")),
                   chat_template=template, add_bos=bool(config.get("add_bos_token", False)))

    @classmethod
    def from_gguf_metadata(cls, reader) -> Tokenizer:
        """Builds the tokenizer from a `gguf.GGUFReader`'s `tokenizer.ggml.*` fields (byte-level BPE only)."""
        meta = _gguf_fields(reader, ("tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                                     "tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id",
                                     "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id",
                                     "tokenizer.ggml.add_bos_token", "tokenizer.chat_template"))
        kind = meta.get("tokenizer.ggml.model")
        if kind not in SUPPORTED_GGUF_TOKENIZERS:
            raise TokenizerError(f"GGUF tokenizer model {kind!r} is not supported (supported: "
                                 f"{SUPPORTED_GGUF_TOKENIZERS}, byte-level BPE); convert from the HF folder instead")
        tokens, merges = meta["tokenizer.ggml.tokens"], meta.get("tokenizer.ggml.merges")
        if not merges:
            raise TokenizerError("GGUF byte-level BPE tokenizer has no tokenizer.ggml.merges")
        backend = _byte_level_bpe(tokens, merges, meta.get("tokenizer.ggml.token_type") or [])
        names = {k: tokens[meta[f"tokenizer.ggml.{k}_token_id"]] if f"tokenizer.ggml.{k}_token_id" in meta else None
                 for k in ("bos", "eos", "padding")}
        return cls(backend, bos_token=names["bos"], eos_token=names["eos"], pad_token=names["padding"],
                   chat_template=meta.get("tokenizer.chat_template"),
                   add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", False)))


def _byte_level_bpe(tokens: list[str], merges: list[str], token_types: list[int]) -> tokenizers.Tokenizer:
    alphabet = _byte_alphabet()
    letters = set(alphabet.values())
    # Tokens are stored in the byte alphabet already; respell any that are not (as transformers does).
    vocab = {(t if set(t) <= letters else "".join(alphabet[b] for b in t.encode("utf-8"))): i
             for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ")) for m in merges]
    backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    # Control tokens match whole and count as special; a "control" token outside the byte alphabet is a
    # llama.cpp mislabel and is skipped (transformers does the same).
    special = [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, token_types)
               if k == _GGUF_CONTROL and set(t) <= letters]
    user = [AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, token_types)
            if k == _GGUF_USER_DEFINED]
    backend.add_special_tokens(special)
    if user:
        backend.add_tokens(user)
    return backend


def _gguf_fields(reader, keys) -> dict[str, Any]:
    return {k: reader.fields[k].contents() for k in keys if k in reader.fields}


def _token_str(value) -> str | None:
    """HF configs write special tokens as strings or as AddedToken dicts."""
    if isinstance(value, dict):
        return value.get("content")
    return value


@functools.cache
def _compile_template(template: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TokenizerError(f"chat template error: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None, **kw: json.dumps(x, indent=indent, ensure_ascii=False)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)
