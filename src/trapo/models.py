"""Load any local ``save_pretrained`` directory: the one loader every command and run uses."""

from __future__ import annotations

import json
import os
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def load_model_and_tokenizer(path: str | os.PathLike, device: str = "cpu", dtype: str = "auto", **init_kwargs):  # noqa: C901 (one clear error per way a directory can be wrong)
    """``AutoModelForCausalLM`` and its tokenizer from a local directory (nothing is downloaded).

    A tokenizer whose ``tokenizer_config.json`` names ``TokenizersBackend`` / ``PreTrainedTokenizerFast``
    is loaded as exactly that: transformers 5's AutoTokenizer otherwise substitutes the model type's own
    tokenizer class (Qwen2Tokenizer for a Qwen2 model), which can re-tokenize a custom vocabulary
    differently. ``device="auto"`` picks CUDA when available. ``init_kwargs`` (TRL's ``model_init_kwargs``,
    ``trust_remote_code``) go to ``from_pretrained``; ``None`` values are left out.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileNotFoundError(f"model {str(path)!r} is a file; expected a model directory (save_pretrained output)")
    if not path.is_dir():
        text = str(path)
        if text.count("/") == 1 and not text.startswith((".", "/", "~")) and not path.exists():
            raise FileNotFoundError(
                f"model {text!r} is not a local directory; trapo loads models from disk only (nothing is "
                f"downloaded). If it is a Hugging Face Hub id, download it first on a machine with internet: "
                f"hf download {text} --local-dir models/{path.name} (or huggingface-cli download), then pass "
                f"--model models/{path.name}"
            )
        raise FileNotFoundError(f"model directory {str(path)!r} does not exist")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a model directory (no config.json; expected save_pretrained output)")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"{path}: no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)}); "
            "save the tokenizer with the model (tokenizer.save_pretrained(dir))"
        )
    tok_config = path / "tokenizer_config.json"
    try:
        declared = json.loads(tok_config.read_text()).get("tokenizer_class") if tok_config.is_file() else None
        if declared in ("TokenizersBackend", "PreTrainedTokenizerFast"):
            tokenizer = PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
        else:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot load the tokenizer: {err}") from err
    kwargs = {k: v for k, v in init_kwargs.items() if v is not None}
    dtype = kwargs.pop("dtype", None) or dtype
    if dtype != "auto":
        kwargs["dtype"] = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **kwargs)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot load the model: {err}") from err
    except Exception as err:  # a truncated or garbled weights file (safetensors' own error type) and the like
        raise ValueError(f"{path}: cannot load the model weights ({type(err).__name__}: {err})") from err
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device), tokenizer
