"""``TRAPOConfig``: every knob of a training run, in one dataclass (TRL's naming where TRL has the name).

Fields left at ``None`` take the value of the chosen method's preset (:mod:`trapo.methods`), so
``TRAPOConfig(method="grpo")`` is a complete GRPO configuration. A config can be read from YAML
(:func:`load_config`) and every field is a ``trapo train`` flag.

TRL's ``GRPOConfig`` names are accepted with TRL's meaning (docs/TRL.md has the table): ``loss_type``
(grpo / dr_grpo / dapo / bnpo, mapped onto ``loss_normalization``), ``scale_rewards`` (group / batch /
none; True / False as in older TRL), ``num_generations``, ``max_completion_length``,
``per_device_train_batch_size`` and ``gradient_accumulation_steps`` (which then set ``prompts_per_step``
and ``mini_batch_size`` by TRL's arithmetic, see :meth:`TRAPOConfig.for_processes`), ``beta``, ``epsilon``,
``reward_weights``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from trapo import config_trl
from trapo.config_engine import EngineFields
from trapo.config_trl import DEFAULT_MAX_STEPS, TRLFields, accepts_trl_names
from trapo.domains import check_fields
from trapo.guidance import MicroGroupSchedule
from trapo.methods import METHODS, Method, get_method
from trapo.objective import ObjectiveWeights, PrefixLoss
from trapo.trl_refused import REFUSED

# TRL's loss_type -> our loss_normalization (TRL's bnpo normalises by the local batch's tokens, ours by the
# global batch's, the same on one process).
TRL_LOSS_TYPES = {"grpo": "seq_mean_token_mean", "bnpo": "token_mean", "dapo": "token_mean", "dr_grpo": "constant"}
SCALE_REWARDS = ("group", "batch", "none")
FSDP_WORDS = ("full_shard", "offload")  # the words of HF TrainingArguments' --fsdp this trainer implements


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


@accepts_trl_names
@dataclass
class TRAPOConfig(EngineFields, TRLFields):
    # --- what to run ---------------------------------------------------------------------------------
    method: str = _help(f"Training method: {', '.join(METHODS)}.", default="trapo")
    output_dir: str = _help(
        "Where checkpoints, metrics.jsonl, samples.jsonl and the final model go.", default="runs/trapo"
    )
    seed: int = _help("Seed of data order, rollouts and initialisation.", default=0)
    max_steps: int = _help(
        f"Optimizer steps; -1 (TRL's default): num_train_epochs epochs when set, else {DEFAULT_MAX_STEPS} steps.",
        default=-1,
    )
    prompts_per_step: int = _help("Prompts per optimizer step, over all processes (the paper used 8).", default=8)
    per_device_train_batch_size: int | None = _help(
        "TRL's name: completions per process per forward/backward. When it or gradient_accumulation_steps is "
        "set, prompts_per_step = per_device_train_batch_size x gradient_accumulation_steps x processes / "
        "num_generations and mini_batch_size = per_device_train_batch_size (TRL's defaults 8 and 1 fill the "
        "other). Unset: prompts_per_step and mini_batch_size rule.",
        default=None,
    )
    gradient_accumulation_steps: int | None = _help(
        "TRL's name: forward/backward passes per optimizer step (see per_device_train_batch_size).", default=None
    )

    # --- data --------------------------------------------------------------------------------------------
    prompt_template: str = _help(
        "How a prompt becomes text: chat (the tokenizer's chat template), none (the last user message as plain "
        "text), trapo (the authors' Qwen prompt: system message + 'Please reason step by step, and put your final "
        "answer within \\boxed{}.'), or a file holding a format string with {problem}.",
        default="chat",
    )
    expert_key: str | None = _help(
        "Column holding the expert solutions (dotted for nesting: extra_info.answer_list). Default: "
        "extra_info.expert_solutions, else the one of target, expert_solutions, solutions, extra_info.answer_list "
        "present (several present: an error naming them).",
        default=None,
    )
    expert_think: Literal["keep", "extract"] = _help(
        "Expert solutions written <think>...</think> + final text: keep the whole text, or extract the text "
        "inside <think> (the authors' code; a solution without the block is used whole, stripped).",
        default="keep",
    )

    # --- rollouts --------------------------------------------------------------------------------------
    num_generations: int | None = _help(
        "Trajectories per prompt (the paper: 8). Default: the method's micro-group sizes summed.", default=None
    )
    max_prompt_length: int = _help("Longer prompts are skipped (counted), or an error with --strict.", default=512)
    max_completion_length: int = _help(
        "Tokens per response, expert prefix included (the paper used 8192).", default=256
    )
    temperature: float = _help("Sampling temperature of rollouts.", default=1.0)
    top_p: float = _help("Nucleus sampling of rollouts.", default=1.0)
    rollout_mode: Literal["sequential", "speculative", "pipelined"] = _help(
        "sequential: one generation pass per micro-group; speculative: all candidates (guided and unguided) in "
        "one pass, keeping what the schedule picks (a third more rows); pipelined: one running batch that a "
        "prompt's next micro-group joins once its last is scored (continuous batching). All three sample the "
        "same trajectories for a seed; speeds in docs/results/step_cost.md.",
        default="sequential",
    )
    generation_batch_size: int = _help("Sequences per generation forward pass.", default=512)
    top_k: int = _help("Top-k sampling of rollouts (0: off).", default=0)
    # --- guidance (None = the method's preset) ---------------------------------------------------------
    micro_group_sizes: list[int] | None = _help("Micro-group sizes (TRAPO: 4 2 1 1).", default=None)
    guidance_ratios: list[float] | None = _help("Prefix ratio of each level (TRAPO: 0 0.25 0.5 1).", default=None)
    guidance_thresholds: list[float] | None = _help(
        "Group g>0 is guided while the prompt's cumulative return is below threshold g (TRAPO: 2 4 7).", default=None
    )
    prefix_loss_counts: list[int] | None = _help(
        "How many trajectories of each micro-group get the prefix loss (TRAPO: 0 1 1 1).", default=None
    )
    adaptive_guidance: bool | None = _help("Adapt levels to the return (False: group g always level g).", default=None)
    prefix_boundary: str = _help("Paragraph marker prefix cuts move to.", default="\n\n")
    prefix_slack: float = _help("A cut moves to the next boundary within +slack of the response.", default=0.3)
    prefix_boundary_match: Literal["ends_with", "contains"] = _help(
        "A boundary token's text ends with the marker (ours: the cut lands right after the break) or contains "
        "it (the authors': BPE merges '\\n\\n' with what follows, so the cut may take a few characters more).",
        default="ends_with",
    )
    prefix_boundary_strict: bool = _help(
        "Take the first boundary strictly after the exact cut (the authors' '>'); ours (False) also takes a "
        "boundary at the cut itself ('>=').",
        default=False,
    )

    # --- losses ----------------------------------------------------------------------------------------
    prefix_loss: PrefixLoss | None = _help("Loss on expert tokens (default: the method's).", default=None)
    trsft_alpha: float = _help("TrSFT trust-region threshold alpha (TRAPO.md §1).", default=0.1)
    prefix_loss_coef: float = _help("Weight of the prefix loss.", default=1.0)
    luffy_gamma: float = _help("LUFFY's policy-shaping gamma in f(p)=p/(p+gamma).", default=0.1)
    entropy_coef: float = _help("Entropy bonus (the paper used 0.001).", default=0.001)
    entropy_tokens: Literal["continuation", "all"] = _help(
        "Tokens the entropy bonus covers: the model's own (continuation; ours: the prefix is the expert's "
        "text, not the policy's choice) or every response token, prefix included (the authors' code).",
        default="continuation",
    )
    beta: float = _help(
        "KL penalty to a frozen copy of the initial model (k3 estimator); 0 keeps no copy.", default=0.0
    )
    epsilon: float = _help("PPO clip range, low side.", default=0.2)
    epsilon_high: float | None = _help("PPO clip range, high side (default: epsilon).", default=None)
    num_iterations: int = _help("Policy updates per batch of rollouts (1: ratio is 1, clipping inert).", default=1)
    loss_normalization: Literal["constant", "token_mean", "seq_mean_token_mean"] = _help(
        "constant: token sum / (max_completion_length x trajectories) (Dr. GRPO; the authors divide by a "
        "fixed constant instead, see loss_constant); token_mean: mean over the batch's tokens; "
        "seq_mean_token_mean: per-sequence mean, then mean.",
        default="constant",
    )
    loss_type: str | None = _help(
        "TRL's name for loss_normalization, with TRL's meaning: grpo (= seq_mean_token_mean), dr_grpo "
        "(= constant), dapo (= token_mean over the global batch), bnpo (= token_mean); our names also work. "
        "Set, it overrides loss_normalization.",
        default=None,
    )
    loss_constant: float | None = _help(
        "With constant normalisation: divide each process's token-loss sum by this number instead of "
        "max_completion_length x trajectories. Gradients are averaged over processes, so the effective "
        "divisor is loss_constant x processes, as in the authors' code (8192 x 8 GPUs; they divide per "
        "micro-batch, so their exact equivalent is 8192 x micro-batches per step).",
        default=None,
    )
    sft_normalization: Literal["constant", "token_mean", "seq_mean_token_mean"] = _help(
        "Normalisation of the SFT steps of sft / sft-then-grpo.", default="token_mean"
    )
    scale_rewards: str = _help(
        "Divide advantages by the reward std of the group (group; True means this), of the whole batch "
        "(batch), or not at all (none; False means this; the paper does not scale).",
        default="none",
    )
    advantage_baseline: Literal["all", "unguided"] = _help(
        "Group mean over all trajectories, or over unguided ones only (TRAPO.md §3 variant).", default="all"
    )
    sft_fraction: float | None = _help("Share of steps (first) that are SFT (default: the method's).", default=None)
    reward_weights: list[float] | None = _help(
        "Weights of several reward functions (TRL's name; default: 1 each). The reward is their weighted sum; "
        "each is logged on its own as reward/<function name>.",
        default=None,
    )

    # --- optimisation ----------------------------------------------------------------------------------
    learning_rate: float = _help("Peak learning rate (the paper: 1e-6 on a 7B model).", default=1e-6)
    lr_scheduler_type: Literal["constant", "linear", "cosine"] = _help("Schedule after warm-up.", default="constant")
    warmup_steps: float = _help("Linear warm-up steps (a float in (0, 1): that share of max_steps).", default=0)
    weight_decay: float = _help("AdamW weight decay (the authors' code: 0.01).", default=0.0)
    adam_beta1: float = _help("AdamW beta1.", default=0.9)
    adam_beta2: float = _help("AdamW beta2.", default=0.999)
    max_grad_norm: float = _help("Gradient clipping (0 disables).", default=1.0)
    mini_batch_size: int = _help("Trajectories per forward/backward (gradients accumulate over the batch).", default=64)
    bf16: bool = _help(
        "bfloat16 compute for rollouts and updates, on CPU and GPU (autocast; weights and optimizer state stay "
        "float32). Pays on large matrices; the miniature's 4.27M model ran 1.1-1.3x slower (step_cost.md).",
        default=False,
    )
    save_dtype: Literal["auto", "float32", "bfloat16", "float16"] = _help(
        "dtype of final/ (auto: the dtype the model came in). Whatever the input's dtype, the trained weights "
        "and the optimizer state are float32 and checkpoints keep float32, so a bfloat16 or float16 model "
        "gets the update a float32 copy gets; a float16 final/ that would overflow is saved as float32.",
        default="auto",
    )
    fsdp: str | None = _help(
        "Shard parameters, gradients and AdamW state over the processes with torch's FSDP2 (HF TrainingArguments' "
        "name): 'full_shard', or 'full_shard offload' to keep the shards in CPU memory. Needs several processes "
        "(torchrun / accelerate launch); with --bf16, parameters are gathered in bfloat16. '' or None (default): "
        "every process holds the whole model (DDP).",
        default=None,
    )

    # --- LoRA ------------------------------------------------------------------------------------------
    lora: dict | str | None = field(
        default=None,
        metadata={
            "help": "LoRA settings {r, alpha, target_modules} (a dict or its JSON); the keywords and flags "
            "lora_r (rank; 0 trains all weights), lora_alpha (16) and lora_target_modules (all-linear) set it. "
            "TRL's scripts pass LoRA as peft_config (ModelConfig's --use_peft) instead."
        },
    )

    # --- logging and checkpoints -----------------------------------------------------------------------
    logging_steps: float = _help(
        "Metrics every N steps (metrics.jsonl, the console line; a float in (0, 1): that share of max_steps).",
        default=1,
    )
    save_steps: float = _help(
        "Checkpoint every N steps (0: only at the end and on interrupt; a float in (0, 1): that share of max_steps).",
        default=0,
    )
    save_minutes: float = _help(
        "Also checkpoint when N minutes have passed since the last checkpoint (0: never), so a SIGKILL or an "
        "out-of-memory kill loses minutes, not the run.",
        default=10.0,
    )
    overwrite_output_dir: bool = _help(
        "Start afresh in an output_dir that holds another run (its checkpoints, metrics and final model are "
        "deleted); without it such a directory is refused unless --resume.",
        default=False,
    )
    save_total_limit: int | None = _help("Keep at most N checkpoints (0 or None: keep all).", default=2)
    sample_log_steps: int = _help("Write example trajectories to samples.jsonl every N steps (0: never).", default=10)
    report_to: list[str] | str | None = _help(
        "Extra metric sinks: none, all, or tracker names (tensorboard, wandb, trackio, ...), as TRL.", default="none"
    )
    max_nonfinite_steps: int = _help(
        "Stop after this many consecutive steps skipped (NaN/inf loss or gradient, or an update out of range: "
        "see update_guard_factor).",
        default=3,
    )
    update_guard_factor: float = _help(
        "Do not apply an optimizer step whose size (|dw|/|w| per unit of lr, judged from the gradients before "
        "the step) is more than this many times the median of recent steps (0: off).",
        default=10.0,
    )
    max_update_ratio: float = _help(
        "Do not apply an optimizer step that would change the weights by more than this fraction of their "
        "norm, or make them NaN/inf (0: off).",
        default=1.0,
    )
    reward_timeout: float = _help(
        "Seconds one reward call may take (a call scores one micro-group); past it the call's items fail "
        "as timed out. A --reward function runs in a worker process so the bound holds for any code "
        "(0: no bound, in-process).",
        default=60.0,
    )
    max_reward_failure_share: float = _help(
        "Stop when at least this share of a step's rewards failed (raised, timed out, NaN, not a number, "
        "unverifiable ground truth) ...",
        default=1.0,
    )
    max_reward_failure_steps: int = _help("... for this many steps in a row (0: never stop).", default=3)
    strict: bool = _help("Bad data rows are errors instead of skipped-and-counted.", default=False)

    def __post_init__(self) -> None:  # noqa: C901 (a flat list of independent checks)
        method = get_method(self.method)
        self.check_trl_fields()
        self.lora = config_trl.lora_settings(self.lora)
        self.report_to = config_trl.report_sinks(self.report_to)
        self.save_total_limit = self.save_total_limit or 0
        if self.max_steps < 1 and self.max_steps != -1:
            raise ValueError(
                f"max_steps must be >= 1 (or -1, TRL's default: num_train_epochs epochs), got {self.max_steps}"
            )
        if self.max_steps < 1 and self.num_train_epochs is None:
            self.max_steps = DEFAULT_MAX_STEPS
        if self.max_steps >= 1:  # else resolved from the data set's size (for_dataset)
            for name in ("warmup_steps", "logging_steps", "save_steps"):
                setattr(self, name, config_trl.steps_of(getattr(self, name), self.max_steps, name))
        self.scale_rewards = _scale_rewards(self.scale_rewards)
        check_fields(self)  # every field's type and range (trapo.domains), before anything reads them
        if self.loss_type is not None:
            if self.loss_type not in TRL_LOSS_TYPES and self.loss_type not in TRL_LOSS_TYPES.values():
                raise ValueError(
                    f"loss_type must be one of {', '.join(TRL_LOSS_TYPES)} (TRL) or "
                    f"constant, token_mean, seq_mean_token_mean, got {self.loss_type!r}"
                )
            self.loss_normalization = TRL_LOSS_TYPES.get(self.loss_type, self.loss_type)
        self.fsdp = self.fsdp or ""  # TRL's default is None
        words = self.fsdp.split()
        if words and ("full_shard" not in words or set(words) - set(FSDP_WORDS)):
            raise ValueError(f"fsdp must be '', 'full_shard' or 'full_shard offload', got {self.fsdp!r}")
        if self.reward_weights is not None and not self.reward_weights:
            raise ValueError("reward_weights must name one weight per reward function, got an empty list")
        for name, ok, rule in (
            ("vllm_importance_sampling_clip_max", self.vllm_importance_sampling_clip_max > 0, "> 0"),
            ("vllm_gpu_memory_utilization", 0 < self.vllm_gpu_memory_utilization <= 1, "in (0, 1]"),
        ):
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)}")
        sizes = self.schedule().sizes  # validates the guidance fields
        if self.num_generations is not None and self.num_generations != sum(sizes):
            resized = method.sizes_for(self.num_generations) if self.micro_group_sizes is None else None
            if resized is not None:
                self.micro_group_sizes = list(resized)
            else:
                raise ValueError(
                    f"num_generations={self.num_generations} but micro_group_sizes sum to {sum(sizes)}; "
                    "set micro_group_sizes (and thresholds) to match"
                )

    # --- resolved views ------------------------------------------------------------------------------------
    @property
    def uses_trl_batch(self) -> bool:
        return self.per_device_train_batch_size is not None or self.gradient_accumulation_steps is not None

    def for_processes(self, num_processes: int) -> TRAPOConfig:
        """This config for ``num_processes`` processes: with TRL's batch fields set, ``prompts_per_step`` and
        ``mini_batch_size`` follow TRL's arithmetic (completions per step = per_device_train_batch_size x
        gradient_accumulation_steps x processes, ``num_generations`` per prompt); otherwise unchanged."""
        if not self.uses_trl_batch:
            return self
        per_device = self.per_device_train_batch_size or 8
        accumulation = self.gradient_accumulation_steps or 1
        completions = per_device * accumulation * num_processes
        n = self.schedule().num_generations
        if completions % n:
            raise ValueError(
                f"per_device_train_batch_size ({per_device}) x gradient_accumulation_steps ({accumulation}) x "
                f"processes ({num_processes}) = {completions} completions per step, not a multiple of "
                f"num_generations ({n})"
            )
        return dataclasses.replace(self, prompts_per_step=completions // n, mini_batch_size=per_device)

    @property
    def preset(self) -> Method:
        return get_method(self.method)

    def _or_preset(self, value: Any, preset_value: Any) -> Any:
        """``value`` where the user set it, else the method preset's value."""
        return preset_value if value is None else value

    def schedule(self) -> MicroGroupSchedule:
        """The micro-group schedule: the method's preset with this config's overrides."""
        m = self.preset.schedule
        return MicroGroupSchedule(
            sizes=tuple(self._or_preset(self.micro_group_sizes, m.sizes)),
            ratios=tuple(self._or_preset(self.guidance_ratios, m.ratios)),
            thresholds=tuple(self._or_preset(self.guidance_thresholds, m.thresholds)),
            prefix_loss_counts=tuple(self._or_preset(self.prefix_loss_counts, m.prefix_loss_counts)),
            adaptive=self._or_preset(self.adaptive_guidance, m.adaptive),
        )

    @property
    def resolved_prefix_loss(self) -> str:
        return self._or_preset(self.prefix_loss, self.preset.prefix_loss)

    @property
    def resolved_sft_fraction(self) -> float:
        return self._or_preset(self.sft_fraction, self.preset.sft_fraction)

    def objective_weights(self) -> ObjectiveWeights:
        """The coefficients of the batch loss (:func:`trapo.objective.trapo_loss`) this config sets."""
        correct = self.vllm_importance_sampling_correction  # applied where the engine gives log-probs (vLLM)
        return ObjectiveWeights(
            prefix_loss=self.resolved_prefix_loss,
            trsft_alpha=self.trsft_alpha,
            prefix_loss_coef=self.prefix_loss_coef,
            luffy_gamma=self.luffy_gamma,
            entropy_coef=self.entropy_coef,
            epsilon=self.epsilon,
            epsilon_high=self.epsilon if self.epsilon_high is None else self.epsilon_high,
            beta=self.beta,
            entropy_tokens=self.entropy_tokens,
            importance_sampling_cap=self.vllm_importance_sampling_clip_max if correct else None,
            importance_sampling_mode=self.vllm_importance_sampling_mode,
        )

    @property
    def uses_expert(self) -> bool:
        """Whether the run trains on expert solutions: some micro-group is guided, or some steps are SFT."""
        return any(r > 0 for r in self.schedule().ratios) or self.sft_steps > 0

    @property
    def sft_steps(self) -> int:
        """Steps (from the start) that are plain SFT."""
        return round(self.max_steps * self.resolved_sft_fraction)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _scale_rewards(value: Any) -> str:
    """TRL's scale_rewards: "group" / "batch" / "none"; True / False (older TRL's bool) and their
    spellings on a command line map to "group" / "none"."""
    if isinstance(value, bool):
        return "group" if value else "none"
    text = str(value).strip().lower()
    text = {"true": "group", "yes": "group", "1": "group", "false": "none", "no": "none", "0": "none"}.get(text, text)
    if text not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)} (or True / False), got {value!r}")
    return text


def config_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(TRAPOConfig)]


def check_keys(values: dict[str, Any], source: str) -> None:
    """Raise ``ValueError`` naming ``source`` and the valid keys when ``values`` has unknown keys."""
    for name in sorted(set(values) & set(REFUSED)):
        config_trl.refuse(name, values[name])
    unknown = sorted(set(values) - set(config_fields()) - set(REFUSED) - set(config_trl.LORA_KEYWORDS))
    if unknown:
        raise ValueError(f"{source}: unknown config key(s) {unknown}; valid keys: {', '.join(config_fields())}")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file, keys checked against :class:`TRAPOConfig`."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise FileNotFoundError(f"cannot read config file {path}: {err}") from err
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got {type(values).__name__}")
    check_keys(values, str(path))
    return values


def load_config(path: str | Path | None = None, **overrides: Any) -> TRAPOConfig:
    """A config from a YAML file (optional) with keyword overrides on top."""
    values = read_yaml(path) if path else {}
    check_keys(overrides, "overrides")
    values.update(overrides)
    return TRAPOConfig(**values)
