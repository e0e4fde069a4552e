"""``trapo compare``: train TRAPO and its baselines from one base model, over seeds, and compare them fairly.

The protocol:

1. **Learning-rate sweep** (stage 1). For each method, train one run per learning rate of its grid at the
   sweep seed (``spec.sweep_seed``, 0 by default, apart from the test seeds) and evaluate the final model on
   the *validation* split. The chosen learning rate is the one with the highest in-domain validation
   average (:func:`select_lr`; ties go to the smaller rate); while it is at an edge of the grid, a rate half
   a decade beyond that edge is added (:func:`~trapo_lab.compare.aggregate.grid_extension`, at most
   ``spec.lr_extensions``). Every sweep run's in-domain and retained validation accuracy is kept. The test
   split is never looked at for this choice.
2. **Seeds** (stage 2). Every test seed is trained at the chosen rate. Each final model is evaluated on the
   test tiers and retained skills (one sample per problem at the training temperature by default), on a
   pass@k set (k = 1..16; every in-domain test problem by default), and every intermediate checkpoint on
   the validation split (the curves that show where methods plateau). The base model is evaluated the same
   way and gets its own row. Besides accuracy, each evaluation records the share of outputs without a final
   ``\\boxed`` answer (degenerate) and of outputs in the expert's style
   (:func:`trapo_lab.tasks.solution_style`), and keeps its per-problem outcomes; the training metrics give
   the share of prefix tokens below TrSFT's alpha over training. Every method gets the same number of
   optimizer steps; ``sft`` has no rollouts, so its steps are much cheaper.
3. **Equal wall-clock** (:func:`wallclock_step`). The budget is the longest full-run training time (sum of
   the logged ``perf/step_s``) of the reference method (GRPO by default) over its seeds; each run is
   represented by its latest checkpoint whose cumulative training time does not exceed the budget (the
   base model, step 0, if none does). Methods cheaper than the reference are not trained past
   ``max_steps``, so this view can only take steps away from slower methods, never give steps to faster ones.
   A second equal-time view reads the step costs from an interleaved benchmark instead
   (:mod:`~trapo_lab.compare.readings`).
4. **Claims** (:mod:`~trapo_lab.compare.claims`). The paper's four claims, each a paired difference against
   TRAPO with a bootstrap 95% interval over test problems and seeds (:mod:`~trapo_lab.compare.stats`) and a
   verdict by the interval rule; the per-seed paired differences stay beside them, in both views.

Caching and resuming. Every run lives in its own directory under ``runs_dir``, named by a hash of its full
config, the base model's weights and the training data. A finished run is reused, an unfinished one resumes
from its last checkpoint, and evaluations are cached under a key of the evaluation settings and problems. So
the comparison can be run in pieces (``max_runs`` / ``time_budget_s``) and an interruption loses at most the
steps since the run's last checkpoint (the trainer also saves one on Ctrl-C).

The modules, by job:

- :mod:`~trapo_lab.compare.spec` — what to run (:class:`CompareSpec`);
- :mod:`~trapo_lab.compare.data` — the problems it runs on (:class:`CompareData`) and the default inputs;
- :mod:`~trapo_lab.compare.cache` — the run cache: run directories, hashes, evaluation cache, JSON files;
- :mod:`~trapo_lab.compare.runner` — running it (:class:`Comparison`: training, evaluating, resuming, budgets);
- :mod:`~trapo_lab.compare.aggregate` — the arithmetic: rules, tables and views (pure functions);
- :mod:`~trapo_lab.compare.stats`, :mod:`~trapo_lab.compare.claims`, :mod:`~trapo_lab.compare.readings` —
  the bootstrap and interval rule, the claims, the second readings (pure functions);
- :mod:`~trapo_lab.compare.provenance` — which code (trapo version, git commit) made each run and evaluation;
- :mod:`~trapo_lab.compare.report` and :mod:`~trapo_lab.compare.plots` — ``results.md`` / ``results.json``
  and the figures.
"""

from __future__ import annotations

from .aggregate import (
    PAIRED_AGAINST,
    condense_dynamics,
    cumulative_seconds,
    group_average,
    mean_std,
    paired_differences,
    select_lr,
    wallclock_step,
)
from .cache import EVAL_VERSION, FORMAT, RunCache, RunKey, examples_identity, format_lr, model_identity
from .data import CompareData, ensure_inputs, first_per_source
from .report import results_markdown, write_report
from .runner import CompareResult, Comparison, StopRequested
from .spec import DEFAULT_LRS, DEFAULT_METHODS, CompareSpec

__all__ = [
    "DEFAULT_LRS",
    "DEFAULT_METHODS",
    "EVAL_VERSION",
    "FORMAT",
    "PAIRED_AGAINST",
    "CompareData",
    "CompareResult",
    "CompareSpec",
    "Comparison",
    "RunCache",
    "RunKey",
    "StopRequested",
    "condense_dynamics",
    "cumulative_seconds",
    "ensure_inputs",
    "examples_identity",
    "first_per_source",
    "format_lr",
    "group_average",
    "mean_std",
    "model_identity",
    "paired_differences",
    "results_markdown",
    "select_lr",
    "wallclock_step",
    "write_report",
]
