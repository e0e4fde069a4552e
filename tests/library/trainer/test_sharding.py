"""``--fsdp full_shard`` in one process: the config, what one process does with it, what is refused, and the
sharding helpers on a gloo group of one (the 2-process runs are in test_distributed.py)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from accelerate.utils import DistributedType
from torch.distributed.tensor import DTensor

from trapo.config import TRAPOConfig
from trapo.rollout import HFEngine, SamplingParams
from trapo.trainer import TRAPOTrainer, sharding


def test_fsdp_takes_hf_trainingarguments_words_and_refuses_others():
    assert TRAPOConfig(fsdp="full_shard offload").fsdp == "full_shard offload"
    for bad in ("shard_grad_op", "offload", "full_shard auto_wrap"):
        with pytest.raises(ValueError, match=f"fsdp must be '', 'full_shard' or 'full_shard offload', got '{bad}'"):
            TRAPOConfig(fsdp=bad)


def test_one_process_has_nothing_to_shard_and_says_so(tmp_path, tokenizer, model, rows, capsys):
    cfg = TRAPOConfig(
        method="sft", output_dir=str(tmp_path / "run"), max_steps=1, prompts_per_step=2, fsdp="full_shard"
    )
    trainer = TRAPOTrainer(model, processing_class=tokenizer, train_dataset=rows, args=cfg)
    assert not trainer.fsdp and not sharding.is_sharded(trainer.model)
    assert "--fsdp full_shard: one process, nothing to shard; training unsharded" in capsys.readouterr().out
    assert trainer.train().steps == 1


def test_lora_under_fsdp_is_refused_by_name(tmp_path, tokenizer, model, rows):
    two = SimpleNamespace(num_processes=2, distributed_type=DistributedType.MULTI_CPU, state=None, print=print)
    cfg = TRAPOConfig(method="sft", output_dir=str(tmp_path / "run"), fsdp="full_shard", lora_r=4)
    with pytest.raises(NotImplementedError, match=r"--fsdp full_shard with LoRA .* is not supported"):
        TRAPOTrainer(model, processing_class=tokenizer, train_dataset=rows, args=cfg, accelerator=two)


@pytest.fixture
def group():
    """A gloo process group of one process (FSDP2 then shards over a world of 1)."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_sharding_helpers_on_a_group_of_one(group, tokenizer, model):
    plain = copy.deepcopy(model)
    sharded = sharding.shard_model(model, torch.device("cpu"))
    assert sharding.is_sharded(sharded) and all(isinstance(p, DTensor) for p in sharded.parameters())
    assert sharding.element_counts(sharded) == (sum(p.numel() for p in plain.parameters()),) * 2
    # the whole state dict, one tensor at a time, under the unsharded model's names
    items = dict(sharding.full_state_dict_items(sharded))
    expected = plain.state_dict()
    assert items.keys() == expected.keys()
    assert all(torch.equal(items[k], expected[k]) for k in expected)
    # save_pretrained's layout: the tied head once, under the embedding's name
    assert "lm_head.weight" not in sharding.full_state_dict(sharded) and plain.config.tie_word_embeddings
    # generation with every parameter gathered once: plain tensors inside, shards again after, same tokens
    prompts, sampling = [[5, 6, 7], [8, 9]], SamplingParams(temperature=0.0)
    want = HFEngine.from_tokenizer(plain, tokenizer).generate(prompts, 6, sampling)
    with sharding.gathered(sharded):
        assert not any(isinstance(p, DTensor) for p in sharded.parameters())
        got = HFEngine.from_tokenizer(sharded, tokenizer).generate(prompts, 6, sampling)
    assert got == want and all(isinstance(p, DTensor) for p in sharded.parameters())
    # an idle pass adds nothing to the gradient; the pass count is the largest over processes
    loss = sharding.idle_loss(sharded, tokenizer.pad_token_id, torch.device("cpu"))
    loss.backward()
    assert float(loss.detach()) == 0.0 and all(
        float(sharding.local(p.grad).abs().sum()) == 0 for p in sharded.parameters()
    )
    assert sharding.pass_count(3, torch.device("cpu")) == 3
