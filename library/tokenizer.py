"""The real LLaMA-3 tokenizer, built offline (paper §4.2: "tokenized with the 128K vocabulary LLaMA3 tokenizer").

Meta's tiktoken BPE file ships in the `llama-models` package (`llama_models/llama3/tokenizer.model`);
`transformers.convert_slow_tokenizer.TikTokenConverter` turns it into a fast tokenizer. The result is the
Llama 3 tokenizer as published:

* 128,000 BPE tokens followed by 256 special tokens (128,256 ids): `<|begin_of_text|>` = 128000,
  `<|end_of_text|>` = 128001, `<|reserved_special_token_0|>` = 128002, `<|reserved_special_token_1|>` =
  128003, `<|finetune_right_pad_id|>` = 128004, `<|step_id|>` = 128005, `<|start_header_id|>` = 128006,
  `<|end_header_id|>` = 128007, `<|eom_id|>` = 128008, `<|eot_id|>` = 128009, `<|python_tag|>` = 128010,
  `<|image|>` = 128011, then `<|reserved_special_token_2|>` ... `<|reserved_special_token_245|>`.
* `tokenizer("Add 3 and 4")` prepends BOS (a `TemplateProcessing` post-processor):
  [128000, 2261, 220, 18, 323, 220, 19]; `add_special_tokens=False` gives [2261, 220, 18, 323, 220, 19].
* bos = `<|begin_of_text|>`, eos = `<|end_of_text|>` (the base model's end of document), pad =
  `<|finetune_right_pad_id|>` (128004) as in Llama 3.1 (a token no document contains, so padding is never confused
  with a real end of sequence).
* Numbers are split into chunks of at most 3 digits and a space before a number is its own token (220), so
  "0" ... "999" are single tokens whether or not a space precedes them (`number_token_ids`).

Building takes about 2 s (the conversion walks all 128k BPE ranks in Python), so the tokenizer is cached in
process (`functools.lru_cache`: calls with the same arguments return the same shared instance; do not mutate
it, `copy.deepcopy` it first) and on disk: the converted `tokenizer.json` is written under
`cache_root() / "tokenizer" / <fingerprint>` and reloads in about 0.7 s. The fingerprint covers the BPE file,
this module's source and the `tokenizers` version, so any change rebuilds. (Reloading a `save_pretrained`
folder with `from_pretrained` is no faster than converting, since it parses the 7 MB JSON in Python first, so
the cache holds only the backend file and `llama3_tokenizer` re-applies the settings.)
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import os
import tempfile
from pathlib import Path

import tokenizers
from tokenizers import processors
from transformers import PreTrainedTokenizerFast

BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_text|>"
PAD_TOKEN = "<|finetune_right_pad_id|>"
NUM_RESERVED_SPECIAL_TOKENS = 256

# The named special tokens in id order from 128000 (llama_models/llama3/tokenizer.py); the rest of the 256
# special ids are `<|reserved_special_token_2|>` upwards.
_NAMED_SPECIAL_TOKENS = (
    BOS_TOKEN,
    EOS_TOKEN,
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    PAD_TOKEN,
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|image|>",
)
SPECIAL_TOKENS: tuple[str, ...] = _NAMED_SPECIAL_TOKENS + tuple(
    f"<|reserved_special_token_{2 + i}|>" for i in range(NUM_RESERVED_SPECIAL_TOKENS - len(_NAMED_SPECIAL_TOKENS))
)

# LLaMA-3's pre-tokenizer split pattern (the same string as in llama_models and TikTokenConverter's default).
_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_INSTALL_HINT = "pip install --no-deps llama-models==0.3.0"


def cache_root() -> Path:
    """Root of LlamaDComp's on-disk caches (tokenizer, task datasets): `$LLAMA_DCOMP_CACHE`, else
    `~/.cache/llama_dcomp`."""
    return Path(os.environ.get("LLAMA_DCOMP_CACHE", Path.home() / ".cache" / "llama_dcomp"))


def fingerprint(*parts: bytes | str) -> str:
    """A short, stable hex digest of `parts` (a cache key)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()[:16]


def tiktoken_model_path() -> Path:
    """Path of Meta's LLaMA-3 BPE file inside the installed `llama-models` package."""
    try:
        resource = importlib.resources.files("llama_models") / "llama3" / "tokenizer.model"
    except ModuleNotFoundError as error:
        raise ImportError(f"The LLaMA-3 tokenizer needs the llama-models package: {_INSTALL_HINT}") from error
    path = Path(str(resource))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall llama-models: {_INSTALL_HINT}")
    return path


def _convert(model_path: Path) -> tokenizers.Tokenizer:
    """The `tokenizers` backend: BPE ranks and special tokens from the file, plus the BOS post-processor."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    converter = TikTokenConverter(vocab_file=str(model_path), pattern=_PATTERN, extra_special_tokens=SPECIAL_TOKENS)
    backend = converter.converted()
    bos_id = backend.token_to_id(BOS_TOKEN)
    backend.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B", special_tokens=[(BOS_TOKEN, bos_id)]
            ),
        ]
    )
    return backend


@functools.cache
def llama3_tokenizer(
    padding_side: str = "right", cache_dir: str | os.PathLike | None = None
) -> PreTrainedTokenizerFast:
    """The LLaMA-3 tokenizer (see the module docstring for its tokens and settings).

    padding_side: "right" (training) or "left" (batched generation).
    cache_dir: folder of the on-disk cache; default `cache_root() / "tokenizer"`.

    The result is cached per argument tuple and shared: do not mutate it (`copy.deepcopy` it first).
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', not {padding_side!r}")
    model_path = tiktoken_model_path()
    key = fingerprint(model_path.read_bytes(), Path(__file__).read_bytes(), tokenizers.__version__)
    cached = Path(cache_dir if cache_dir is not None else cache_root() / "tokenizer") / key / "tokenizer.json"
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so concurrent processes never read a half-written file.
        handle, partial = tempfile.mkstemp(dir=cached.parent, suffix=".partial")
        os.close(handle)
        _convert(model_path).save(partial, pretty=False)
        os.chmod(partial, 0o644)
        os.replace(partial, cached)
    return PreTrainedTokenizerFast(
        tokenizer_file=str(cached),
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side=padding_side,
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=False,
    )


def number_token_ids(tokenizer: PreTrainedTokenizerFast, n: int) -> list[int]:
    """Token id of each number "0" ... str(n - 1) as `tokenizer` encodes it (entry i is the id of str(i)).

    Raises ValueError if some number is not a single token (for LLaMA-3: n > 1000, since numbers are split
    into chunks of up to 3 digits)."""
    ids = []
    for value in range(n):
        encoded = tokenizer.encode(str(value), add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(
                f"{value} is {len(encoded)} tokens {encoded}, not one: this tokenizer gives single tokens only "
                f"below n = {value}"
            )
        ids.append(encoded[0])
    return ids
