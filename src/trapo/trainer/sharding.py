"""Parameter sharding with torch's FSDP2 (``torch.distributed.fsdp.fully_shard``): ``--fsdp full_shard``.

Each decoder layer and then the whole model are wrapped with ``fully_shard`` over all processes (gloo on
CPU, nccl on GPU): every process keeps a 1/N slice of each parameter (a ``DTensor``), of its gradient and
of its AdamW state. A layer's forward all-gathers its parameters and frees them again after it; its
backward reduce-scatters the gradient (averaged over processes, as DDP does). accelerate is not asked to
wrap the model (its FSDP plugin is for GPU set-ups only); it still starts the processes and reduces metrics.

What the trainer needs on top of that, and gets here:

- rollouts: :func:`gathered` all-gathers every parameter once and keeps them gathered while the engine
  generates, so generation runs no collective and processes may stop decoding at different steps;
- equal collectives: every process must run the same number of forward/backward passes, so a process with
  fewer mini-batches runs idle passes (:func:`pass_count`, :func:`idle_loss`);
- the full state dict, in Hugging Face layout, gathered to the main process on CPU (:func:`full_state_dict`),
  or one tensor at a time for an engine that loads weights itself (:func:`full_state_dict_items`);
- the optimizer state saved and loaded sharded with ``torch.distributed.checkpoint``
  (:func:`save_optimizer`, :func:`load_optimizer`); checkpoints (:func:`save_checkpoint`).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from trapo import atomic
from trapo.trainer import checkpoint as ckpt

OPTIMIZER_DIR = "optimizer"  # a checkpoint's sharded optimizer state (torch.distributed.checkpoint)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's repeated blocks: modules of the classes ``transformers`` lists in ``_no_split_modules``
    (``Qwen2DecoderLayer`` ...), the unit each ``fully_shard`` gathers at once."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(
            f"--fsdp full_shard: {type(model).__name__} names no decoder-layer class (_no_split_modules), "
            "so there is no layer to shard on its own"
        )
    return layers


def shard_model(
    model: torch.nn.Module, device: torch.device, *, bf16: bool = False, offload: bool = False
) -> torch.nn.Module:
    """``fully_shard`` each decoder layer, then the root (which takes the rest: embeddings, final norm,
    head), over all processes of the default process group. ``bf16``: parameters gathered in bfloat16,
    gradients reduced in float32 (``MixedPrecisionPolicy``); ``offload``: sharded parameters, gradients and
    optimizer state kept on CPU (``CPUOffloadPolicy``; on a CPU-only set-up they are there anyway)."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    options: dict[str, Any] = {"mesh": mesh}
    if bf16:
        options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if offload:
        options["offload_policy"] = CPUOffloadPolicy(pin_memory=device.type == "cuda")
    for layer in decoder_layers(model):
        fully_shard(layer, **options)
    fully_shard(model, **options)
    return model


def fsdp_modules(model: torch.nn.Module) -> list[FSDPModule]:
    """``model`` and the modules inside it that are sharded with FSDP2, in ``modules()`` order."""
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``model`` or any module inside it is sharded with FSDP2 (a wrapper around a sharded model is)."""
    return bool(fsdp_modules(model))


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's slice of ``tensor`` (the tensor itself when it is not sharded)."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def element_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(parameter elements this process holds, parameter elements of the model)."""
    params = list(model.parameters())
    return sum(local(p).numel() for p in params), sum(p.numel() for p in params)


@contextmanager
def gathered(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Every parameter of the sharded ``model`` all-gathered once and kept whole inside the block (the
    forward passes then gather nothing), sharded again on exit. Generation runs inside it: each process
    decodes its own prompts for as many steps as they need, with no collective to keep in step. Costs one
    all-gather of the model per call and the whole model's parameters in memory while it lasts."""
    modules = fsdp_modules(model)
    for m in modules:
        m.set_reshard_after_forward(False, recurse=False)
    try:
        for m in modules:
            m.unshard()
        yield model
    finally:
        for m in modules:
            m.reshard()
            m.set_reshard_after_forward(True, recurse=False)


def pass_count(n: int, device: torch.device) -> int:
    """The most forward/backward passes any process has to run this update (``n`` is this process's):
    each pass of a sharded model gathers parameters with every other process, so all run the same number."""
    count = torch.tensor([n], dtype=torch.int64, device=device)
    dist.all_reduce(count, op=dist.ReduceOp.MAX)
    return int(count.item())


def idle_loss(model: torch.nn.Module, pad_id: int, device: torch.device) -> torch.Tensor:
    """A loss of exactly 0 from a forward pass on one pad token: a process short of mini-batches backpropagates
    it to take part in the others' collectives without adding to the gradient."""
    logits = model(input_ids=torch.full((1, 1), pad_id, dtype=torch.long, device=device)).logits
    return logits.float().sum() * 0.0


def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """Clip the (sharded) gradients to a total norm of ``max_norm``; returns the norm before clipping, the same
    on every process."""
    norm = torch.nn.utils.clip_grad_norm_(list(parameters), max_norm)
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def _tied_names(model: torch.nn.Module) -> set[str]:
    """Names under which a parameter appears a second time (a tied ``lm_head.weight``)."""
    first: dict[int, str] = {}
    tied = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if first.setdefault(id(param), name) != name:
            tied.add(name)
    return tied


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with whole tensors on CPU on the main process ({} on the others), a tied
    parameter under its first name only (as ``save_pretrained`` writes it). Every process must call it (the
    tensors are all-gathered)."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    tied = _tied_names(model)
    return {name: tensor for name, tensor in state.items() if name not in tied}


def full_state_dict_items(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, whole tensor)`` of the sharded model's state dict, one tensor gathered at a time (at most one
    whole tensor in memory beyond the shards), on every process; names as the unsharded model has them. For an
    engine that loads weights itself (vLLM's ``load_weights`` takes this iterable). Every process must run
    the iteration to the end, in step: each tensor is an all-gather."""
    for name, tensor in model.state_dict().items():
        yield name, tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def load_full_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Shard a whole state dict (held by every process) into the model; returns (missing, unexpected) keys."""
    result = set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))
    return list(result.missing_keys), list(result.unexpected_keys)


def _init_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create the optimizer's state tensors (a step with zero gradients at lr 0, which changes no weight), so
    that ``torch.distributed.checkpoint`` has shards to load into; the load then overwrites them."""
    if optimizer.state:
        return
    lrs = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
        for p in group["params"]:
            if p.requires_grad:
                p.grad = torch.zeros_like(p)
    optimizer.step()
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)


def save_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Each process writes its shard of the optimizer state under ``path`` (``torch.distributed.checkpoint``)."""
    import torch.distributed.checkpoint as dcp

    dcp.save(get_optimizer_state_dict(model, optimizer), checkpoint_id=str(path))


def load_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Load the sharded optimizer state :func:`save_optimizer` wrote (the same number of processes)."""
    import torch.distributed.checkpoint as dcp

    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no sharded optimizer state (was the checkpoint written with --fsdp?)")
    _init_optimizer_state(optimizer)
    state = get_optimizer_state_dict(model, optimizer)
    dcp.load(state, checkpoint_id=str(path))
    set_optimizer_state_dict(model, optimizer, state)


def _shared_temp_dir(final: Path, is_main: bool) -> Path:
    """A temporary sibling of ``final`` made by the main process, its path sent to every process."""
    name = [str(atomic.temp_sibling(final)) if is_main else None]
    dist.broadcast_object_list(name, src=0)
    return Path(name[0])


def save_checkpoint(
    output_dir: Path, step: int, model, tokenizer, optimizer, scheduler, state: dict[str, Any], keep: int, is_main: bool
) -> Path:
    """``checkpoint-STEP`` of a sharded run, written whole or not at all, by every process together: the model
    as a whole state dict in Hugging Face layout (main process), the optimizer state sharded under
    ``optimizer/`` (each process its shard), scheduler and trainer state as :func:`checkpoint.save_checkpoint`."""
    final = Path(output_dir) / f"checkpoint-{step}"
    weights = full_state_dict(model)
    tmp = _shared_temp_dir(final, is_main)
    try:
        save_optimizer(model, optimizer, tmp / OPTIMIZER_DIR)
        if is_main:
            ckpt.write_checkpoint(tmp, step, model, tokenizer, {"scheduler": scheduler.state_dict()}, state, weights)
        dist.barrier()
        if is_main:
            atomic.commit(tmp, final)
            ckpt.prune(output_dir, keep)
    except BaseException:
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    dist.barrier()
    return final


def load_checkpoint(model, optimizer, scheduler, checkpoint: Path) -> dict[str, Any]:
    """Load a :func:`save_checkpoint` checkpoint into the sharded model, optimizer and scheduler; returns the
    trainer state. Every process reads the whole weights (NaN/inf weights raise before the model is touched) and
    keeps its shard."""
    weights = ckpt.refuse_nonfinite(ckpt.read_weights(checkpoint))
    ckpt.check_weights(model, checkpoint, *load_full_state_dict(model, weights))
    load_optimizer(model, optimizer, checkpoint / OPTIMIZER_DIR)
    return ckpt.load_training_state(checkpoint, None, scheduler)
