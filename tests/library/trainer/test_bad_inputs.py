"""`trapo train` on bad input: a message that names the problem, a documented exit code, no traceback, and
nothing that was on disk lost or changed.

Exit codes: 2 a user error caught before training; 3 the run stopped itself (rewards failing, updates out of
range). Flag *parsing* (argparse) is tested elsewhere; these inputs all parse.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from trapo.cli import main
from trapo.data import write_examples


def _helpers():
    """make_model / make_rows of this folder's conftest (a plain function is needed by a module fixture)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_trainer_conftest", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_model, module.make_rows


FLAGS = ["--prompts_per_step", "2", "--max_completion_length", "16", "--learning_rate", "1e-3", "--max_steps", "1"]


@dataclass
class Base:
    model: Path
    data: Path
    run: Path  # a finished 2-step run with checkpoint-1 and checkpoint-2
    rows: list[dict]


@pytest.fixture(scope="module")
def base(tmp_path_factory, tokenizer) -> Base:
    make_model, make_rows = _helpers()
    root = tmp_path_factory.mktemp("base")
    model = root / "model"
    make_model(tokenizer).save_pretrained(model)
    tokenizer.save_pretrained(model)
    data = root / "train.jsonl"
    write_examples(make_rows(), data)
    run = root / "run"
    assert (
        main(
            [
                "train",
                "--model",
                str(model),
                "--data",
                str(data),
                "--output",
                str(run),
                *FLAGS,
                "--max_steps",
                "2",
                "--save_steps",
                "1",
                "--save_total_limit",
                "0",
            ]
        )
        == 0
    )
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    return Base(model, data, run, rows)


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _rows(base: Base, change: Callable[[dict], None], first_only: bool = False) -> list[dict]:
    rows = json.loads(json.dumps(base.rows))
    for r in rows[:1] if first_only else rows:
        change(r)
    return rows


def _model_copy(base: Base, tmp: Path, change: Callable[[Path], None]) -> Path:
    m = tmp / "model_copy"
    shutil.copytree(base.model, m)
    change(m)
    return m


def _run_copy(base: Base, tmp: Path) -> Path:
    out = tmp / "run_copy"
    shutil.copytree(base.run, out)
    return out


def _args(model, data, out, *extra) -> list[str]:
    return ["train", "--model", str(model), "--data", str(data), "--output", str(out), *FLAGS, *extra]


def _flags(*extra: str):
    """A case's argv builder: the shared model and data with these extra flags."""
    return lambda b, t: _args(b.model, b.data, t / "out", *extra)


def _reward_file(tmp: Path, body: str) -> str:
    path = tmp / "my_reward.py"
    path.write_text(body)
    return str(path)


# Each case: (id, build(base, tmp) -> argv, exit code, text the message must contain).
CASES: list[tuple[str, Callable[[Base, Path], list[str]], int, str]] = []


def case(name: str, rc: int, text: str):
    def register(build):
        CASES.append((name, build, rc, text))
        return build

    return register


# ---------------------------------------------------------------------------------------------- the model
case("model_missing", 2, "does not exist")(lambda b, t: _args(t / "nope", b.data, t / "out"))
case("model_is_a_file", 2, "is a file; expected a model directory")(lambda b, t: _args(b.data, b.data, t / "out"))
case("model_without_config", 2, "no config.json")(
    lambda b, t: _args(_model_copy(b, t, lambda m: (m / "config.json").unlink()), b.data, t / "out")
)
case("model_config_not_json", 2, "config.json' is not a valid JSON file")(
    lambda b, t: _args(_model_copy(b, t, lambda m: (m / "config.json").write_text("{oops")), b.data, t / "out")
)
case("model_config_unknown_type", 2, "cannot load the model")(
    lambda b, t: _args(
        _model_copy(
            b,
            t,
            lambda m: (m / "config.json").write_text(
                json.dumps({**json.loads((m / "config.json").read_text()), "model_type": "no-such-arch"})
            ),
        ),
        b.data,
        t / "out",
    )
)
case("model_weights_truncated", 2, "cannot load the model weights")(
    lambda b, t: _args(
        _model_copy(
            b, t, lambda m: (m / "model.safetensors").write_bytes((m / "model.safetensors").read_bytes()[:5000])
        ),
        b.data,
        t / "out",
    )
)
case("model_weights_empty_file", 2, "cannot load the model weights")(
    lambda b, t: _args(_model_copy(b, t, lambda m: (m / "model.safetensors").write_bytes(b"")), b.data, t / "out")
)
case("model_weights_missing", 2, "cannot load the model")(
    lambda b, t: _args(_model_copy(b, t, lambda m: (m / "model.safetensors").unlink()), b.data, t / "out")
)
case("model_without_tokenizer", 2, "no tokenizer files")(
    lambda b, t: _args(
        _model_copy(b, t, lambda m: [(m / f).unlink() for f in ("tokenizer.json", "tokenizer_config.json")]),
        b.data,
        t / "out",
    )
)
case("model_tokenizer_garbled", 2, "cannot load the tokenizer")(
    lambda b, t: _args(
        _model_copy(b, t, lambda m: (m / "tokenizer.json").write_text("{not a tokenizer")), b.data, t / "out"
    )
)

# ---------------------------------------------------------------------------------------------- the data
case("data_missing", 2, "no such file or directory")(lambda b, t: _args(b.model, t / "nope.jsonl", t / "out"))
case("data_wrong_suffix", 2, "unsupported file type '.csv'")(
    lambda b, t: _args(b.model, _jsonl(t / "d.csv", b.rows), t / "out")
)
case("data_empty_directory", 2, "directory has no *.parquet or *.jsonl files")(
    lambda b, t: (t / "empty").mkdir() or _args(b.model, t / "empty", t / "out")
)
case("data_directory_without_train_split", 2, "has no train files (it has test, val splits")(
    lambda b, t: (
        (t / "splits").mkdir()
        or (
            _jsonl(t / "splits" / "val.jsonl", b.rows)
            and _jsonl(t / "splits" / "test.jsonl", b.rows)
            and _args(b.model, t / "splits", t / "out")
        )
    )
)
case("data_empty_file", 2, "no usable examples")(lambda b, t: _args(b.model, _jsonl(t / "d.jsonl", []), t / "out"))
case("data_not_json", 2, "is not valid JSON")(
    lambda b, t: _args(b.model, _jsonl(t / "d.jsonl", ["{bad", "nope"]), t / "out")
)
case("data_rows_are_arrays", 2, "is a JSON list, not an object")(
    lambda b, t: _args(b.model, _jsonl(t / "d.jsonl", ["[1, 2]", "[3]"]), t / "out")
)
case("data_no_answer_column", 2, "reward_model.ground_truth")(
    lambda b, t: _args(b.model, _jsonl(t / "d.jsonl", _rows(b, lambda r: r.pop("reward_model"))), t / "out")
)
case("data_no_prompt_column", 2, "'prompt'")(
    lambda b, t: _args(b.model, _jsonl(t / "d.jsonl", _rows(b, lambda r: r.pop("prompt"))), t / "out")
)
case("data_all_prompts_empty", 2, "no usable examples")(
    lambda b, t: _args(b.model, _jsonl(t / "d.jsonl", _rows(b, lambda r: r.update(prompt=[]))), t / "out")
)
case("data_all_answers_empty", 2, "no usable examples")(
    lambda b, t: _args(
        b.model, _jsonl(t / "d.jsonl", _rows(b, lambda r: r["reward_model"].update(ground_truth=""))), t / "out"
    )
)
case("data_strict_bad_row", 2, "d.jsonl: line 1: field 'reward_model.ground_truth'")(
    lambda b, t: _args(
        b.model,
        _jsonl(t / "d.jsonl", _rows(b, lambda r: r["reward_model"].update(ground_truth=""), first_only=True)),
        t / "out",
        "--strict",
    )
)
case("data_prompt_key_absent", 2, "'question_text'")(_flags("--prompt-key", "question_text"))
case("data_answer_key_absent", 2, "'solution.final'")(_flags("--answer-key", "solution.final"))
case("data_parquet_garbage", 2, "d.parquet")(
    lambda b, t: (t / "d.parquet").write_bytes(b"not parquet at all") and _args(b.model, t / "d.parquet", t / "out")
)
case("data_unknown_chat_role", 2, "d.jsonl:1: the tokenizer's chat template cannot render the prompt")(
    lambda b, t: _args(
        b.model,
        _jsonl(
            t / "d.jsonl",
            _rows(
                b,
                lambda r: r.update(prompt=[{"role": "user", "content": "1+1"}, {"role": "wizard", "content": "x"}]),
                first_only=True,
            ),
        ),
        t / "out",
    )
)
case("data_message_without_content", 2, "no usable examples")(
    lambda b, t: _args(
        b.model, _jsonl(t / "d.jsonl", _rows(b, lambda r: r.update(prompt=[{"role": "user"}]))), t / "out"
    )
)
case("data_every_prompt_too_long", 2, "no usable training rows")(_flags("--max_prompt_length", "2"))
case("data_strict_prompt_too_long", 2, "more than max_prompt_length=2")(_flags("--max_prompt_length", "2", "--strict"))
case("data_sft_without_experts", 2, "--method sft trains on expert solutions, but no row has an expert solution")(
    lambda b, t: [
        *_args(
            b.model, _jsonl(t / "d.jsonl", _rows(b, lambda r: r["extra_info"].update(expert_solutions=[]))), t / "out"
        ),
        "--method",
        "sft",
    ]
)
case("data_strict_expert_wrong_type", 2, "field 'extra_info.expert_solutions': must be a list of strings")(
    lambda b, t: _args(
        b.model,
        _jsonl(t / "d.jsonl", _rows(b, lambda r: r["extra_info"].update(expert_solutions=5), first_only=True)),
        t / "out",
        "--strict",
    )
)
case("data_strict_unverifiable_ground_truth", 2, "d.jsonl: line 1 (math-verify cannot parse ground truth")(
    lambda b, t: _args(
        b.model,
        _jsonl(t / "d.jsonl", _rows(b, lambda r: r["reward_model"].update(ground_truth="\\frac{"), first_only=True)),
        t / "out",
        "--strict",
    )
)
case("data_directory_of_non_data_files", 2, "directory has no *.parquet or *.jsonl files")(
    lambda b, t: (t / "txt").mkdir() or ((t / "txt" / "a.txt").write_text("x") and _args(b.model, t / "txt", t / "out"))
)

# ---------------------------------------------------------------------------------------------- the config
case("config_unknown_method", 2, "unknown method 'ppo'; valid methods")(_flags("--method", "ppo"))
case("config_zero_steps", 2, "max_steps must be >= 1 (or -1, TRL's default")(_flags("--max_steps", "0"))
case("config_zero_prompts", 2, "prompts_per_step must be >= 1, got 0")(_flags("--prompts_per_step", "0"))
case("config_zero_completion_length", 2, "max_completion_length must be >= 1")(_flags("--max_completion_length", "0"))
case("config_negative_learning_rate", 2, "learning_rate must be > 0")(_flags("--learning_rate=-1e-5"))
case("config_zero_iterations", 2, "num_iterations must be >= 1")(_flags("--num_iterations", "0"))
case("config_zero_mini_batch", 2, "mini_batch_size must be >= 1")(_flags("--mini_batch_size", "0"))
case("config_trsft_alpha_zero", 2, "trsft_alpha must be in (0, 1]")(_flags("--trsft_alpha", "0"))
case("config_trsft_alpha_above_one", 2, "trsft_alpha must be in (0, 1], got 2.0")(_flags("--trsft_alpha", "2"))
case("config_sft_fraction_above_one", 2, "sft_fraction must be in [0, 1]")(_flags("--sft_fraction", "1.5"))
case("config_num_generations_mismatch", 2, "num_generations=6 but micro_group_sizes sum to 8")(
    _flags("--num_generations", "6")
)
case("config_negative_save_minutes", 2, "save_minutes must be >= 0")(_flags("--save_minutes=-1"))
case("config_negative_reward_timeout", 2, "reward_timeout must be >= 0")(_flags("--reward_timeout=-1"))
case("config_zero_failure_share", 2, "max_reward_failure_share must be in (0, 1]")(
    _flags("--max_reward_failure_share", "0")
)
case("config_file_missing", 2, "cannot read config file")(
    lambda b, t: [*_args(b.model, b.data, t / "out"), "--config", str(t / "none.yaml")]
)
case("config_file_not_yaml", 2, "not valid YAML")(
    lambda b, t: (
        (t / "c.yaml").write_text("a: [1,\n") and [*_args(b.model, b.data, t / "out"), "--config", str(t / "c.yaml")]
    )
)
case("config_file_a_list", 2, "expected a mapping of config keys, got list")(
    lambda b, t: (
        (t / "c.yaml").write_text("- 1\n- 2\n") and [*_args(b.model, b.data, t / "out"), "--config", str(t / "c.yaml")]
    )
)
case("config_file_unknown_key", 2, "unknown config key(s) ['lr']")(
    lambda b, t: (
        (t / "c.yaml").write_text("lr: 1\n") and [*_args(b.model, b.data, t / "out"), "--config", str(t / "c.yaml")]
    )
)
case("config_file_bad_value", 2, "max_steps must be >= 1")(
    lambda b, t: (
        (t / "c.yaml").write_text("max_steps: -3\n")
        and [
            "train",
            "--config",
            str(t / "c.yaml"),
            "--model",
            str(b.model),
            "--data",
            str(b.data),
            "--output",
            str(t / "out"),
        ]
    )
)

# ---------------------------------------------------------------------------------------------- the reward
case("reward_file_missing", 2, "does not exist")(
    lambda b, t: [*_args(b.model, b.data, t / "out"), "--reward", f"{t}/none.py:f"]
)
case("reward_spec_without_function", 2, "expected 'module:function'")(_flags("--reward", "just_a_name"))
case("reward_module_missing", 2, "cannot import module 'no_such_module_xyz'")(
    _flags("--reward", "no_such_module_xyz:f")
)
case("reward_function_missing", 2, "has no attribute 'nope'")(
    lambda b, t: [
        *_args(b.model, b.data, t / "out"),
        "--reward",
        _reward_file(t, "def score(c, gt):\n    return 1.0\n") + ":nope",
    ]
)
case("reward_not_callable", 2, "is a int, not a function")(
    lambda b, t: [*_args(b.model, b.data, t / "out"), "--reward", _reward_file(t, "SCORE = 3\n") + ":SCORE"]
)
case("reward_file_fails_to_import", 2, "importing reward file")(
    lambda b, t: [*_args(b.model, b.data, t / "out"), "--reward", _reward_file(t, "raise RuntimeError('x')\n") + ":f"]
)
case("reward_unknown_signature", 2, "cannot tell the signature of reward")(
    lambda b, t: [
        *_args(b.model, b.data, t / "out"),
        "--reward",
        _reward_file(t, "def f(a, b, c):\n    return 1.0\n") + ":f",
    ]
)
STOP = ["--max_reward_failure_steps", "1"]
case("reward_returns_strings", 3, "not a number")(
    lambda b, t: [
        *_args(b.model, b.data, t / "out"),
        *STOP,
        "--reward",
        _reward_file(t, "def f(completion, ground_truth):\n    return 'high'\n") + ":f",
    ]
)
case("reward_always_raises", 3, "RuntimeError: reward server down")(
    lambda b, t: [
        *_args(b.model, b.data, t / "out"),
        *STOP,
        "--reward",
        _reward_file(t, "def f(completion, ground_truth):\n    raise RuntimeError('reward server down')\n") + ":f",
    ]
)
case("reward_returns_nan", 3, "the reward returned nan")(
    lambda b, t: [
        *_args(b.model, b.data, t / "out"),
        *STOP,
        "--reward",
        _reward_file(t, "def f(completion, ground_truth):\n    return float('nan')\n") + ":f",
    ]
)
case("reward_returns_none", 3, "the reward returned nan")(
    lambda b, t: [
        *_args(b.model, b.data, t / "out"),
        *STOP,
        "--reward",
        _reward_file(t, "def f(prompts, completions, **kw):\n    return [None] * len(completions)\n") + ":f",
    ]
)
case("reward_one_score_for_many", 3, "returned 1 scores for")(
    lambda b, t: [
        *_args(b.model, b.data, t / "out"),
        *STOP,
        "--reward",
        _reward_file(t, "def f(completions, examples):\n    return [1.0]\n") + ":f",
    ]
)
case("reward_dict_without_score", 3, "without a 'score' key")(
    lambda b, t: [
        *_args(b.model, b.data, t / "out"),
        *STOP,
        "--reward",
        _reward_file(
            t, "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n    return {'acc': 1}\n"
        )
        + ":compute_score",
    ]
)
case("reward_hangs", 3, "timed out after 0.3 s")(
    lambda b, t: [
        *_args(b.model, b.data, t / "out"),
        *STOP,
        "--reward_timeout",
        "0.3",
        "--reward",
        _reward_file(t, "import time\ndef f(completion, ground_truth):\n    time.sleep(60)\n    return 1.0\n") + ":f",
    ]
)
case("reward_kills_its_process", 3, "worker process died")(
    lambda b, t: [
        *_args(b.model, b.data, t / "out"),
        *STOP,
        "--reward",
        _reward_file(t, "import os\ndef f(completion, ground_truth):\n    os._exit(9)\n") + ":f",
    ]
)
case("ground_truths_all_unverifiable", 3, "math-verify cannot parse ground truth")(
    lambda b, t: [
        *_args(
            b.model,
            _jsonl(t / "d.jsonl", _rows(b, lambda r: r["reward_model"].update(ground_truth="\\frac{"))),
            t / "out",
        ),
        *STOP,
    ]
)

# ---------------------------------------------------------------------------------------------- output and resume
case("output_is_a_file", 2, "is a file, not a directory")(
    lambda b, t: (t / "f").write_text("keep me") and _args(b.model, b.data, t / "f")
)
case("output_holds_another_run", 2, "holds another run")(lambda b, t: _args(b.model, b.data, _run_copy(b, t)))
case("resume_with_nothing_to_resume", 2, "no complete checkpoint to resume from")(_flags("--resume"))
case("resume_missing_checkpoint_path", 2, "no complete checkpoint to resume from")(
    lambda b, t: [*_args(b.model, b.data, _run_copy(b, t)), "--resume", str(t / "run_copy" / "checkpoint-9")]
)
case("resume_with_another_config", 2, "trained with a different config (learning_rate: 0.001 -> 0.5")(
    lambda b, t: [*_args(b.model, b.data, _run_copy(b, t)), "--resume", "--learning_rate", "0.5"]
)
case("resume_with_another_method", 2, "method: 'trapo' -> 'grpo'")(
    lambda b, t: [*_args(b.model, b.data, _run_copy(b, t)), "--resume", "--method", "grpo"]
)
case("resume_every_checkpoint_corrupt", 2, "no readable checkpoint to resume from")(
    lambda b, t: [
        [p.write_bytes(b"\0") for p in _run_copy(b, t).glob("checkpoint-*/model.safetensors")],
        [*_args(b.model, b.data, t / "run_copy"), "--resume", "--max_steps", "3"],
    ][1]
)
case("resume_state_file_garbled", 2, "no readable checkpoint to resume from")(
    lambda b, t: [
        [p.write_text("{") for p in _run_copy(b, t).glob("checkpoint-*/trainer_state.json")],
        [*_args(b.model, b.data, t / "run_copy"), "--resume", "--max_steps", "3"],
    ][1]
)
HELD: list = []  # locks the cases below hold (kept referenced for the length of the module)


def _locked(out: Path) -> Path:
    """``out`` locked by this process as another run would lock it (an flock, not just a file)."""
    from trapo.locking import FileLock

    out.mkdir()
    HELD.append(FileLock(out / ".trapo.lock", str(out)).acquire())
    return out


case("output_locked_by_a_live_process", 2, "is in use by another trapo process")(
    lambda b, t: _args(b.model, b.data, _locked(t / "out"))
)
case("updates_explode", 3, "steps in a row had a NaN/inf loss or gradient or an update out of range")(
    _flags("--learning_rate", "1e6", "--max_steps", "3")
)


# ---------------------------------------------------------------------------------------------- issue 24
def _yaml(t: Path, text: str) -> str:
    path = t / "cfg.yaml"
    path.write_text(text)
    return str(path)


def _nan_checkpoints(run: Path, which: str = "checkpoint-*") -> Path:
    from safetensors.torch import load_file, save_file

    for f in run.glob(f"{which}/model.safetensors"):
        weights = load_file(f)
        first = next(iter(weights))
        weights[first] = weights[first].clone().fill_(float("nan"))
        save_file(weights, f, metadata={"format": "pt"})
    return run


for name, flag, value, text in [
    ("temperature_nan", "--temperature", "nan", "--temperature: temperature must be a finite number, got nan"),
    ("temperature_inf", "--temperature", "inf", "temperature must be a finite number, got inf"),
    ("warmup_negative", "--warmup_steps", "-1", "--warmup_steps must be >= 0, got -1"),
    ("save_steps_negative", "--save-steps", "-5", "--save-steps must be >= 0, got -5"),
    ("lora_r_negative", "--lora_r", "-2", "--lora_r must be >= 0, got -2"),
    ("logging_steps_zero", "--logging_steps", "0", "--logging_steps must be >= 1, got 0"),
    ("top_p_above_one", "--top_p", "1.5", "top_p must be in (0, 1], got 1.5"),
    ("adam_beta2_one", "--adam_beta2", "1", "--adam_beta2 must be in [0, 1), got 1.0"),
    ("seed_negative", "--seed", "-1", "seed must be >= 0, got -1"),
    ("generation_batch_zero", "--generation_batch_size", "0", "--generation_batch_size must be >= 1"),
    ("max_prompt_length_zero", "--max_prompt_length", "0", "--max_prompt_length must be >= 1"),
    ("epsilon_zero", "--epsilon", "0", "epsilon must be > 0, got 0"),
    ("weight_decay_negative", "--weight_decay", "-0.1", "--weight_decay must be >= 0"),
    ("max_grad_norm_nan", "--max_grad_norm", "nan", "--max_grad_norm must be a finite number"),
    ("prefix_slack_negative", "--prefix_slack", "-0.2", "--prefix_slack must be >= 0"),
    ("lora_alpha_zero", "--lora_alpha", "0", "--lora_alpha must be > 0"),
]:
    case(f"domain_{name}", 2, text)(_flags(flag, value))

for name, text, message in [
    ("int_field_float", "save_total_limit: 2.5\n", "cfg.yaml: field 'save_total_limit': save_total_limit must be an"),
    ("int_field_bool", "num_iterations: true\n", "num_iterations must be an integer, got True (bool)"),
    ("float_field_list", "weight_decay: [1, 2]\n", "weight_decay must be a finite number, got [1, 2]"),
    ("temperature_dict", "temperature: {a: 1}\n", "temperature must be a finite number, got {'a': 1}"),
    ("sizes_not_ints", "micro_group_sizes: [4, x]\n", "micro_group_sizes must be a list of integers or null"),
    ("lora_modules_not_strings", "lora_target_modules: [1]\n", "lora_target_modules must be a list of strings"),
    ("logging_steps_list", "logging_steps: [2]\n", "logging_steps must be a whole number or a share"),
    ("warmup_steps_not_whole", "warmup_steps: 1.5\n", "warmup_steps must be a whole number or a share"),
    ("save_minutes_nan", "save_minutes: .nan\n", "save_minutes must be a finite number, got nan"),
    ("bf16_string", "bf16: maybe\n", "bf16 must be true or false, got 'maybe'"),
]:
    case(f"yaml_{name}", 2, message)(
        lambda b, t, text=text: _args(b.model, b.data, t / "out", "--config", _yaml(t, text))
    )

case("reward_module_exits_on_import", 2, "it called sys.exit(0) while being imported")(
    lambda b, t: [*_args(b.model, b.data, t / "out"), "--reward", _reward_file(t, "import sys\nsys.exit(0)\n") + ":f"]
)
case("reward_module_syntax_error", 2, "SyntaxError")(
    lambda b, t: [*_args(b.model, b.data, t / "out"), "--reward", _reward_file(t, "def f(:\n") + ":f"]
)
case("reward_module_missing_dependency", 2, "No module named 'no_such_dep_xyz'")(
    lambda b, t: [*_args(b.model, b.data, t / "out"), "--reward", _reward_file(t, "import no_such_dep_xyz\n") + ":f"]
)
case("data_prompt_only_system_messages", 2, "has no user message with text (roles: system)")(
    lambda b, t: _args(
        b.model,
        _jsonl(t / "d.jsonl", _rows(b, lambda r: r.update(prompt=[{"role": "system", "content": "hi"}]))),
        t / "out",
    )
)
case("resume_max_steps_below_the_checkpoint", 2, "max_steps 1 is below the step of the checkpoint resumed")(
    lambda b, t: [*_args(b.model, b.data, _run_copy(b, t)), "--resume", "--max_steps", "1"]
)
case("resume_with_other_data_rows", 2, "training data: the rows changed (6 -> 5 rows")(
    lambda b, t: [*_args(b.model, _jsonl(t / "d.jsonl", b.rows[:5]), _run_copy(b, t)), "--resume", "--max_steps", "3"]
)
case("resume_with_another_reward", 2, "--reward: 'math' -> ")(
    lambda b, t: [
        *_args(b.model, b.data, _run_copy(b, t)),
        "--resume",
        "--max_steps",
        "3",
        "--reward",
        _reward_file(t, "def f(completion, ground_truth):\n    return 1.0\n") + ":f",
    ]
)
case("resume_with_another_expert_key", 2, "--expert-key: ['extra_info.expert_solutions'] -> ['target']")(
    lambda b, t: [
        *_args(
            b.model,
            _jsonl(t / "d.jsonl", _rows(b, lambda r: r.update(target=r["extra_info"]["expert_solutions"]))),
            _run_copy(b, t),
        ),
        "--resume",
        "--max_steps",
        "3",
        "--expert-key",
        "target",
    ]
)
case("resume_every_checkpoint_nan", 2, "its weights hold NaN/inf")(
    lambda b, t: [*_args(b.model, b.data, _nan_checkpoints(_run_copy(b, t))), "--resume", "--max_steps", "3"]
)


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_there_are_at_least_sixty_distinct_bad_inputs():
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names)) >= 60


@pytest.mark.parametrize(("build", "rc", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(build, rc, text, base, tmp_path, capsys):
    argv = build(base, tmp_path)
    before, base_before = _snapshot(tmp_path), _snapshot(base.run.parent)
    got = main(argv)
    out, err = capsys.readouterr()
    assert got == rc, f"exit {got}, expected {rc}\n{err[-1500:]}"
    assert text in err, err[-1500:]
    assert "Traceback" not in out + err
    after = _snapshot(tmp_path)
    lost = {k for k, v in before.items() if after.get(k) != v}
    assert not lost, f"changed or removed: {sorted(lost)}"
    assert _snapshot(base.run.parent) == base_before
    if rc == 3:
        assert not (Path(argv[argv.index("--output") + 1]) / "final").exists()  # nothing unsound saved
