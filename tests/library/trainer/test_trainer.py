"""The training loop on a tiny real model: every method, masks, guidance, bad input, resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from trapo.config import TRAPOConfig, load_config
from trapo.data import Example
from trapo.methods import METHODS
from trapo.objective import ObjectiveWeights, batch_normaliser, trapo_loss
from trapo.rollout import HFEngine, SamplingParams
from trapo.trainer import TRAPOTrainer
from trapo.trainer.batch import build_token_batch
from trapo.trainer.rollouts import GuidedSampler, Trajectory


def small_config(tmp_path, **kw) -> TRAPOConfig:
    base = dict(
        output_dir=str(tmp_path / "run"),
        max_steps=1,
        prompts_per_step=2,
        max_completion_length=40,
        learning_rate=1e-3,
        sample_log_steps=1,
        seed=0,
    )
    base.update(kw)
    return TRAPOConfig(**base)


def ones(completions, examples):
    return [1.0] * len(completions)


def zeros(completions, examples):
    return [0.0] * len(completions)


@pytest.mark.parametrize("method", list(METHODS))
def test_one_step_of_every_method(method, tmp_path, tokenizer, model, rows):
    steps = 2 if method == "sft-then-grpo" else 1  # one SFT step, then one GRPO step
    cfg = small_config(tmp_path, method=method, max_steps=steps)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = TRAPOTrainer(model, processing_class=tokenizer, train_dataset=rows, args=cfg).train()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, steps + 1))
    last = lines[-1]
    assert math.isfinite(last["loss/total"])
    if method in ("sft",):
        assert last["sft_step"] == 1.0
    else:
        assert last["sft_step"] == 0.0
        level_shares = [v for k, v in last.items() if k.startswith("guidance/level_")]
        assert sum(level_shares) == pytest.approx(1.0)
    changed = any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert changed, "the optimizer step changed no weight"
    saved = load_file(result.final_model_dir / "model.safetensors")
    assert any(k.endswith("embed_tokens.weight") for k in saved)


def make_sampler(model, tokenizer, schedule, reward, speculative=True, temperature=1.0, mode=None, batch_size=256):
    from trapo.data import boundary_token_ids
    from trapo.rewards import as_reward_function

    return GuidedSampler(
        HFEngine.from_tokenizer(model, tokenizer, batch_size),
        tokenizer,
        as_reward_function(reward),
        schedule,
        boundary_ids=boundary_token_ids(tokenizer),
        max_completion_length=40,
        sampling=SamplingParams(temperature=temperature),
        speculative=speculative,
        mode=mode,
    )


def prepared(trainer_cfg, tokenizer, model, rows):
    trainer = TRAPOTrainer(model, processing_class=tokenizer, train_dataset=rows, args=trainer_cfg)
    return trainer, trainer.items


def test_micro_groups_when_every_sample_fails(tmp_path, tokenizer, model, rows):
    """Reward 0 everywhere: R stays 0 < every threshold, so groups 1..3 get levels 1..3 (TRAPO.md §2)."""
    trainer, items = prepared(small_config(tmp_path), tokenizer, model, rows)
    sampler = make_sampler(model, tokenizer, trainer.schedule, zeros)
    batch = sampler.sample(items[:2], torch.Generator().manual_seed(0))
    assert len(batch.trajectories) == 2 * 8
    for p in range(2):
        mine = [t for t in batch.trajectories if t.prompt_index == p]
        assert [t.level for t in mine] == [0, 0, 0, 0, 1, 1, 2, 3]
        assert [t.trains_prefix for t in mine] == [False] * 4 + [True, False, True, True]
        first, second = items[p].expert_ids
        for t in mine:
            expert = second if t.group == 3 else first  # the last micro-group uses the second solution
            assert t.response_ids[: len(t.prefix_ids)] == expert[: len(t.prefix_ids)]
            if t.level == 0:
                assert t.prefix_ids == []
        level3 = mine[-1]
        assert level3.completion_ids == [] and level3.prefix_ids == second  # nothing generated
        # level-1 cuts move to the paragraph boundary after 25% of the solution
        lvl1 = mine[4]
        assert tokenizer.decode(lvl1.prefix_ids).endswith("\n\n")


def test_micro_groups_when_every_sample_succeeds(tmp_path, tokenizer, model, rows):
    trainer, items = prepared(small_config(tmp_path), tokenizer, model, rows)
    sampler = make_sampler(model, tokenizer, trainer.schedule, ones)
    batch = sampler.sample(items[:2], torch.Generator().manual_seed(0))
    assert all(t.level == 0 and t.prefix_ids == [] and not t.trains_prefix for t in batch.trajectories)


def test_speculative_and_sequential_agree_under_greedy_decoding(tmp_path, tokenizer, model, rows):
    trainer, items = prepared(small_config(tmp_path), tokenizer, model, rows)

    def half(completions, examples):  # a real, deterministic reward: success iff the text is long
        return [float(len(c) % 2) for c in completions]

    out = []
    for speculative in (True, False):
        sampler = make_sampler(model, tokenizer, trainer.schedule, half, speculative, temperature=0.0)
        batch = sampler.sample(items[:3], torch.Generator().manual_seed(0))
        out.append([(t.prompt_index, t.level, t.prefix_ids, t.completion_ids, t.reward) for t in batch.trajectories])
    assert out[0] == out[1]


@pytest.mark.parametrize("batch_size", [256, 5])
def test_pipelined_samples_the_same_trajectories_as_sequential_and_speculative(
    tmp_path, tokenizer, model, rows, batch_size
):
    """Sampling at T = 1 with a fixed seed: every mode samples the same tokens, levels and rewards (each
    trajectory has its own random stream), whether the running batch holds every row or 5 at a time."""
    trainer, items = prepared(small_config(tmp_path), tokenizer, model, rows)

    def half(completions, examples):  # a real, deterministic reward that depends on the sampled text
        return [float(len(c) % 2) for c in completions]

    out = {}
    for mode in ("sequential", "speculative", "pipelined"):
        sampler = make_sampler(model, tokenizer, trainer.schedule, half, mode=mode, batch_size=batch_size)
        batch = sampler.sample(items[:4], torch.Generator().manual_seed(11))
        out[mode] = [
            (t.prompt_index, t.group, t.level, t.prefix_ids, t.completion_ids, t.reward, t.trains_prefix)
            for t in batch.trajectories
        ]
    assert out["pipelined"] == out["sequential"] == out["speculative"]
    assert len({r[2] for r in out["pipelined"]}) > 1  # the rewards made some groups guided, others not
    assert len({tuple(r[4]) for r in out["pipelined"] if r[2] == 0}) > 8  # and the samples differ
    again = make_sampler(model, tokenizer, trainer.schedule, half, mode="pipelined")
    other = again.sample(items[:4], torch.Generator().manual_seed(12))
    assert [t.completion_ids for t in other.trajectories] != [r[4] for r in out["pipelined"]]


def test_pipelined_counts_tokens_and_failures(tmp_path, tokenizer, model, rows):
    trainer, items = prepared(small_config(tmp_path), tokenizer, model, rows)

    def flaky(completions, examples):
        return [None if i == 0 else 0.0 for i, _ in enumerate(completions)]

    sampler = make_sampler(model, tokenizer, trainer.schedule, flaky, mode="pipelined")
    batch = sampler.sample(items[:2], torch.Generator().manual_seed(0))
    assert len(batch.trajectories) == 16
    assert batch.generated_tokens == sum(len(t.completion_ids) for t in batch.trajectories) > 0
    assert batch.generation_seconds > 0 and batch.reward_errors >= 1


def test_an_unknown_rollout_mode_is_refused(tokenizer, model):
    from trapo.guidance import MicroGroupSchedule

    with pytest.raises(ValueError, match="sequential, speculative, pipelined"):
        make_sampler(model, tokenizer, MicroGroupSchedule(), zeros, mode="parallel")


def test_token_masks_split_prefix_and_model_tokens(tokenizer):
    trajs = [
        Trajectory(
            prompt_index=0,
            group=1,
            level=1,
            prompt_ids=[5, 6, 7],
            prefix_ids=[10, 11],
            completion_ids=[12, 13, 14],
            trains_prefix=True,
        ),
        Trajectory(
            prompt_index=0,
            group=1,
            level=1,
            prompt_ids=[5, 6],
            prefix_ids=[10, 11],
            completion_ids=[12],
            trains_prefix=False,
        ),
        Trajectory(
            prompt_index=0,
            group=0,
            level=0,
            prompt_ids=[5],
            prefix_ids=[],
            completion_ids=[20, 21],
            trains_prefix=False,
        ),
    ]
    b = build_token_batch(trajs, pad_id=0, device=torch.device("cpu"))
    assert b.input_ids.tolist()[0] == [5, 6, 7, 10, 11, 12, 13, 14]
    # position j predicts token j+1: row 0's prefix tokens 10, 11 are predicted at positions 2, 3
    assert b.prefix_mask[0].nonzero().flatten().tolist() == [2, 3]
    assert b.model_mask[0].nonzero().flatten().tolist() == [4, 5, 6]
    assert not b.prefix_mask[1].any()  # prefix without the loss flag: context only
    assert b.model_mask[1].nonzero().flatten().tolist() == [3]
    assert b.model_mask[2].nonzero().flatten().tolist() == [0, 1]
    assert not (b.prefix_mask & b.model_mask).any()
    assert b.labels[0, 2] == 10


def _logit_grad(batch, advantages, prefix_loss, entropy_coef=0.0):
    logits = torch.randn(*batch.input_ids.shape, 30, generator=torch.Generator().manual_seed(0)).requires_grad_()
    terms = trapo_loss(
        logits,
        batch,
        advantages,
        ObjectiveWeights(prefix_loss=prefix_loss, entropy_coef=entropy_coef),
        model_norm=batch_normaliser("constant", [batch.model_mask], 10),
        prefix_norm=batch_normaliser("constant", [batch.prefix_mask], 10),
    )
    terms.total.backward()
    return logits.grad.abs().sum(-1)[:, :-1]  # per position (shifted like the masks)


def test_trsft_acts_only_on_prefix_tokens_and_pg_only_on_model_tokens():
    trajs = [
        Trajectory(
            prompt_index=0,
            group=2,
            level=2,
            prompt_ids=[1, 2],
            prefix_ids=[3, 4, 5],
            completion_ids=[6, 7],
            trains_prefix=True,
        ),
        Trajectory(
            prompt_index=0,
            group=0,
            level=0,
            prompt_ids=[1, 2],
            prefix_ids=[],
            completion_ids=[8, 9, 10],
            trains_prefix=False,
        ),
    ]
    b = build_token_batch(trajs, pad_id=0, device=torch.device("cpu"))
    g = _logit_grad(b, torch.zeros(2), "trsft")  # zero advantage: only TrSFT moves anything
    assert (g[b.prefix_mask] > 0).all() and (g[~b.prefix_mask] == 0).all()
    g = _logit_grad(b, torch.tensor([0.5, -0.5]), "none")  # no prefix loss: only model tokens
    assert (g[b.model_mask] > 0).all() and (g[~b.model_mask] == 0).all()


def test_bad_config_inputs(tmp_path):
    with pytest.raises(ValueError, match="valid methods: trapo"):
        TRAPOConfig(method="ppo")
    bad = tmp_path / "c.yaml"
    bad.write_text("learning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"c.yaml: unknown config key\(s\) \['learning_rat'\]; valid keys"):
        load_config(bad)
    with pytest.raises(ValueError, match="num_generations=6"):
        TRAPOConfig(num_generations=6)
    assert TRAPOConfig(method="grpo", num_generations=4).schedule().sizes == (4,)


def test_long_prompts_are_skipped_and_counted_or_rejected_with_strict(tmp_path, tokenizer, model, rows):
    long_row = Example(prompt=[{"role": "user", "content": "1+" * 40 + "1"}], answer="41")
    data = [*rows, long_row]
    trainer = TRAPOTrainer(
        model, processing_class=tokenizer, train_dataset=data, args=small_config(tmp_path, max_prompt_length=20)
    )
    assert trainer.data_report.too_long == [len(rows)] and trainer.data_report.kept == len(rows)
    assert trainer.data_report.without_expert == 0
    with pytest.raises(ValueError, match=f"training row {len(rows)}: prompt has"):
        TRAPOTrainer(
            model,
            processing_class=tokenizer,
            train_dataset=data,
            args=small_config(tmp_path, max_prompt_length=20, strict=True),
        )


def test_a_raising_reward_scores_zero_and_the_run_goes_on(tmp_path, tokenizer, model, rows):
    calls = {"n": 0}

    def flaky(completions, examples):
        calls["n"] += 1
        raise RuntimeError("reward server down")

    result = TRAPOTrainer(
        model, processing_class=tokenizer, train_dataset=rows, args=small_config(tmp_path), reward_fn=flaky
    ).train()
    assert calls["n"] > 0
    assert result.last_metrics["reward/mean"] == 0.0


def test_nonfinite_losses_skip_steps_then_stop(tmp_path, tokenizer, model, rows):
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    cfg = small_config(tmp_path, method="sft", max_steps=10, max_nonfinite_steps=3)
    with pytest.raises(RuntimeError, match="3 steps in a row had a NaN/inf loss"):
        TRAPOTrainer(model, processing_class=tokenizer, train_dataset=rows, args=cfg).train()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["skipped_nonfinite"] for x in lines] == [1.0, 1.0, 1.0]


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path, tokenizer, rows, make_model):
    def cfg(name):
        # sequential: 4 reward calls per step, so the interruption below lands in step 3 (pipelined rollouts
        # call the reward once per set of finished micro-groups and sample the same trajectories)
        return small_config(
            tmp_path / name, max_steps=4, lr_scheduler_type="cosine", warmup_steps=1, rollout_mode="sequential"
        )

    full = TRAPOTrainer(make_model(tokenizer), processing_class=tokenizer, train_dataset=rows, args=cfg("full")).train()

    from trapo.rewards import math_reward

    state = {"calls": 0}

    def interrupt_in_step_3(completions, examples):
        state["calls"] += 1
        if state["calls"] > 2 * 4:  # 4 micro-group reward calls per step
            raise KeyboardInterrupt
        return [math_reward(c, e.answer) for c, e in zip(completions, examples, strict=True)]

    with pytest.raises(KeyboardInterrupt):
        TRAPOTrainer(
            make_model(tokenizer),
            processing_class=tokenizer,
            train_dataset=rows,
            args=cfg("cut"),
            reward_fn=interrupt_in_step_3,
        ).train()
    assert (tmp_path / "cut" / "run" / "checkpoint-2").is_dir()
    state["calls"] = -(10**9)  # the same reward (a resume checks it is), no longer interrupting
    resumed = TRAPOTrainer(
        make_model(tokenizer, seed=123),
        processing_class=tokenizer,
        train_dataset=rows,
        args=cfg("cut"),
        reward_fn=interrupt_in_step_3,
    ).train(resume_from_checkpoint=True)
    a = load_file(full.final_model_dir / "model.safetensors")
    b = load_file(resumed.final_model_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    steps = [json.loads(x)["step"] for x in (tmp_path / "cut" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_num_iterations_takes_one_optimizer_step_per_pass(tmp_path, tokenizer, model, rows):
    """num_iterations=2: two policy updates on the same rollouts (the second with ratio != 1)."""
    trainer = TRAPOTrainer(
        model, processing_class=tokenizer, train_dataset=rows, args=small_config(tmp_path, num_iterations=2)
    )
    metrics = trainer.training_step(0)
    steps = {int(state["step"]) for state in trainer.optimizer.state.values()}
    assert steps == {2}
    assert math.isfinite(metrics["loss/total"])
