"""TRL's metric names and its trainer surface, on hand-worked values."""

from __future__ import annotations

import math

import pytest
import torch

from trapo.trainer.trl_surface import Callbacks, clip_fractions, console_line, group_reward_stats, with_trl_names


def test_group_reward_stats_are_trls_reward_std_and_frac_reward_zero_std():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 2.0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    total, n, zero = group_reward_stats(rewards, groups)
    # stds (unbiased): sqrt(0.5), 0, sqrt(2)
    assert n == 3 and zero == 1 and total == pytest.approx(math.sqrt(0.5) + math.sqrt(2))


def test_clip_fractions_count_tokens_where_the_clipped_objective_has_no_gradient():
    old = torch.zeros(2, 3)
    new = torch.log(torch.tensor([[0.5, 1.0, 1.5], [0.5, 1.0, 1.5]]))  # ratios 0.5, 1, 1.5
    adv = torch.tensor([-1.0, 1.0])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    got = clip_fractions(new, old, adv, mask, 0.2, 0.2)
    # row 0 (adv < 0): 0.5 clipped low; row 1 (adv > 0): 1.5 would be high but is masked out
    assert got["clip_ratio/low_mean"] == (1.0, 5.0) and got["clip_ratio/high_mean"] == (0.0, 5.0)
    assert got["clip_ratio/region_mean"] == (1.0, 5.0)
    assert clip_fractions(new, None, adv, mask, 0.2, 0.2)["clip_ratio/region_mean"] == (0.0, 5.0)


def test_trl_names_beside_ours():
    metrics = {"reward/mean": 0.5, "loss/total": -0.1, "lr": 1e-6, "rewards/f": 2.0, "rewards/f/sq": 5.0}
    out = with_trl_names(metrics, ["f"])
    assert out["reward"] == 0.5 and out["loss"] == -0.1 and out["learning_rate"] == 1e-6
    assert out["rewards/f/mean"] == 2.0 and out["rewards/f/std"] == 1.0 and "rewards/f/sq" not in out
    assert out["rewards/f"] == 2.0  # ours stays
    line = console_line(3, 10, out)
    assert line.startswith("step 3/10: loss -0.1 | reward 0.5") and "rewards/f/mean 2" in line


def test_callbacks_get_transformers_arguments_and_can_stop_the_run():
    from transformers import TrainerCallback

    seen = []

    class Stopper(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            seen.append((state.global_step, logs["reward"], "model" in kwargs))

        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step >= 2
            return control

    class Args:
        max_steps, logging_steps, save_steps, num_train_epochs = 5, 1, 0, None

    callbacks = Callbacks([Stopper], Args(), model="m")
    assert isinstance(callbacks.callbacks[0], Stopper)  # a class is instantiated
    for step in (1, 2):
        callbacks.state.global_step = step
        callbacks.log(step, {"reward": float(step)})
        callbacks.fire("on_step_end")
    assert seen == [(1, 1.0, True), (2, 2.0, True)] and callbacks.should_stop
    assert callbacks.state.log_history == [{"reward": 1.0, "step": 1}, {"reward": 2.0, "step": 2}]


def test_the_trainer_logs_trls_names_a_console_line_state_and_callbacks(tmp_path, model_dir, capsys):
    from transformers import TrainerCallback

    from trapo import TRAPOConfig, TRAPOTrainer

    events = []

    class Recorder(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            events.append(("log", state.global_step, round(logs["reward"], 6)))

        def on_step_end(self, args, state, control, **kwargs):
            events.append(("step_end", state.global_step))
            control.should_training_stop = state.global_step >= 2  # stops after step 2 of 3, saved
            return control

        def on_save(self, args, state, control, **kwargs):
            events.append(("save", state.global_step))

    def halves(completions, **kwargs):
        return [float(i % 2) for i in range(len(completions))]

    args = TRAPOConfig(
        output_dir=str(tmp_path / "run"),
        method="grpo",
        max_steps=3,
        num_generations=4,
        per_device_train_batch_size=4,
        max_completion_length=6,
        num_iterations=2,
    )
    rows = [{"prompt": f"{a}+{a}", "solution": str(2 * a)} for a in range(4)]
    trainer = TRAPOTrainer(
        model=str(model_dir), reward_funcs=halves, args=args, train_dataset=rows, callbacks=[Recorder]
    )
    trainer.train()
    history = trainer.state.log_history
    assert [row["step"] for row in history] == [1, 2] and trainer.state.global_step == 2
    first = history[0]
    for name in (
        "reward",
        "reward_std",
        "frac_reward_zero_std",
        "num_tokens",
        "completions/mean_length",
        "clip_ratio/low_mean",
        "clip_ratio/high_mean",
        "clip_ratio/region_mean",
        "rewards/halves/mean",
        "rewards/halves/std",
        "loss",
        "learning_rate",
        "entropy",
        "epoch",
    ):
        assert name in first, name
    assert first["reward"] == first["reward/mean"] == 0.5  # ours kept beside TRL's
    assert first["reward_std"] == pytest.approx(math.sqrt(1 / 3)) and first["frac_reward_zero_std"] == 0.0
    assert first["rewards/halves/std"] == 0.5 and history[1]["num_tokens"] > first["num_tokens"] > 0
    assert ("log", 1, 0.5) in events and ("step_end", 2) in events and ("save", 2) in events
    captured = capsys.readouterr()
    assert "step 1/3: loss" in captured.out + captured.err  # a console line per logging step


def test_save_model_saves_the_lora_adapter_and_the_merged_model_on_request(tmp_path, model_dir):
    pytest.importorskip("peft")
    from trapo import TRAPOConfig, TRAPOTrainer

    args = TRAPOConfig(
        output_dir=str(tmp_path / "run"),
        method="grpo",
        max_steps=1,
        num_generations=4,
        per_device_train_batch_size=4,
        max_completion_length=6,
        lora_r=4,
    )
    rows = [{"prompt": "1+1", "solution": "2"}]
    trainer = TRAPOTrainer(
        model=str(model_dir),
        reward_funcs=lambda completions, **kw: [1.0] * len(completions),
        args=args,
        train_dataset=rows,
    )
    trainer.train()
    adapter = trainer.save_model(tmp_path / "adapter")
    merged = trainer.save_model(tmp_path / "merged", merged=True)
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "model.safetensors").exists()
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()  # the run's final/ stays merged


def test_mask_truncated_completions_leaves_cut_continuations_out_of_the_policy_loss():
    from trapo.trainer.batch import build_token_batch
    from trapo.trainer.rollouts import Trajectory
    from trapo.trainer.step import mask_truncated

    eos = 9
    finished = Trajectory(prompt_ids=[1, 2], completion_ids=[3, eos])
    cut = Trajectory(prompt_ids=[1, 2], prefix_ids=[5], completion_ids=[3, 4], trains_prefix=True, level=1)
    tokens = build_token_batch([finished, cut], 0, torch.device("cpu"))
    before = tokens.model_mask.clone()
    mask_truncated(tokens, [finished, cut], eos)
    assert bool((tokens.model_mask[0] == before[0]).all()) and before[1].any() and not tokens.model_mask[1].any()
    assert tokens.prefix_mask[1].any()  # the expert prefix still trains
