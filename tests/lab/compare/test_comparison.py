"""The comparison end to end on a random tiny model: caching, resuming, learning-rate selection, the report."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from trapo.trainer import TRAPOTrainer, read_metrics
from trapo_lab.compare import Comparison, RunKey, StopRequested, write_report
from trapo_lab.compare.claims import claims_table


@pytest.fixture(scope="module")
def finished(data_dir, base_dir, tmp_path_factory, tiny_spec):
    """One complete comparison (trapo at two rates, grpo at one; two seeds), run once for the module."""
    runs = tmp_path_factory.mktemp("runs")
    step_cost = runs.parent / "step_cost.json"  # trapo's step costs 1.5 grpo steps: 2 / 1.5 -> checkpoint 1
    step_cost.write_text(json.dumps({"machine": "test", "step_time_ratio_to_grpo": {"grpo": 1.0, "trapo": 1.5}}))
    comparison = Comparison(
        tiny_spec(),
        data_dir=data_dir,
        base_dir=base_dir,
        runs_dir=runs,
        progress=False,
        log=lambda _: None,
        step_cost=step_cost,
    )
    result = comparison.run()
    return comparison, result, runs


def test_every_run_is_trained_once_and_evaluated(finished):
    comparison, result, runs = finished
    trained = sorted((k.method, k.lr, k.seed) for k, _ in comparison.trained_runs)
    chosen = result.summary["equal_steps"]["trapo"]["lr"]
    # stage 1: trapo at both rates + grpo at seed 0; stage 2: seed 1 at the chosen rates
    assert trained == sorted(
        [("trapo", 1e-4, 0), ("trapo", 3e-4, 0), ("grpo", 1e-4, 0), ("trapo", chosen, 1), ("grpo", 1e-4, 1)]
    )
    summary = result.summary
    run_dirs = sorted(p.name for p in runs.iterdir() if not p.name.startswith("base-"))
    assert len(run_dirs) == 5 and all(p.count("-") >= 3 for p in run_dirs)
    key = RunKey("trapo", chosen, 1)
    run_dir = comparison.run_dir(key)
    assert run_dir.name.startswith("trapo-lr") and (run_dir / "done.json").is_file()
    cache = json.loads((run_dir / "eval.json").read_text())
    assert {"test@2", "passk@2", "val@1", "val@2"} <= set(cache)
    measured = cache["test@2"]["result"]["groups"]["arith-t1"]
    assert {"acc", "degenerate", "expert_style"} <= set(measured) and measured["n"] == 2
    # per-problem outcomes: one count per problem, and they add up to the group's accuracy
    outcome = cache["test@2"]["result"]["outcomes"]["arith-t1"]
    assert len(outcome["correct"].split()) == 2 and sum(map(int, outcome["correct"].split())) / 2 == measured["acc"]
    assert set(summary["lr_selection"]["trapo"]["retained"]) == {"1e-4", "3e-4"}
    assert len(read_metrics(run_dir)) == 2
    summary = result.summary
    assert set(summary["equal_steps"]) == {"base", "trapo", "grpo"}
    assert summary["equal_steps"]["trapo"]["summary"]["in_domain"]["n"] == 2
    assert set(summary["paired_vs_trapo"]["equal_steps"]) == {"grpo"}
    assert summary["equal_wallclock"]["reference"] == "grpo"
    assert summary["curves"]["grpo"]["steps"] == [0, 1, 2]
    assert summary["passk"]["trapo"]["k"] == [1, 2]
    bench = summary["equal_time_benchmark"]["methods"]
    assert bench["trapo"]["step"] == 1 and bench["grpo"]["step"] == 2 and bench["trapo"]["ratio"] == 1.5
    assert bench["trapo"]["per_seed"]["1"] == comparison._row(RunKey("trapo", chosen, 1), "test", 1)


def test_a_second_invocation_trains_and_evaluates_nothing(finished, data_dir, base_dir, tiny_spec):
    _, result, runs = finished
    weights = sorted(runs.glob("*/final/model.safetensors"))
    before = {p: p.stat().st_mtime_ns for p in weights}
    again = Comparison(
        tiny_spec(), data_dir=data_dir, base_dir=base_dir, runs_dir=runs, progress=False, log=lambda _: None
    )
    second = again.run()
    assert again.trained_runs == [] and again.evaluations_computed == 0
    assert {p: p.stat().st_mtime_ns for p in weights} == before
    assert second.summary["equal_steps"] == result.summary["equal_steps"]
    status = again.status()
    assert (status["runs_done"], status["runs_total"]) == (5, 5)
    assert status["methods"]["grpo"] == {"runs_done": 2, "runs_total": 2, "chosen_lr": "1e-4"}


def test_a_changed_config_is_a_different_run(finished, data_dir, base_dir, tiny_spec):
    comparison, _, runs = finished
    other = Comparison(
        tiny_spec(max_completion_length=20),
        data_dir=data_dir,
        base_dir=base_dir,
        runs_dir=runs,
        progress=False,
        log=lambda _: None,
    )
    key = RunKey("grpo", 1e-4, 0)
    assert other.run_dir(key) != comparison.run_dir(key)
    assert not other.is_trained(key) and comparison.is_trained(key)


class _InterruptedTrainer(TRAPOTrainer):
    """Ctrl-C during the second step (the first step is finished and gets checkpointed by the trainer)."""

    def training_step(self, step):
        if step == 1:
            raise KeyboardInterrupt
        return super().training_step(step)


def test_an_interrupted_run_resumes_from_its_checkpoint(data_dir, base_dir, tmp_path, tiny_spec):
    spec = tiny_spec(methods=("grpo",), seeds=(0,), lr_grid={"grpo": (1e-4,)})
    comparison = Comparison(
        spec, data_dir=data_dir, base_dir=base_dir, runs_dir=tmp_path, progress=False, log=lambda _: None
    )
    key = RunKey("grpo", 1e-4, 0)
    run_dir, config = comparison.cache.prepare_run(key)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    with pytest.raises(KeyboardInterrupt):
        _InterruptedTrainer(model, args=config, train_dataset=comparison.data.train, processing_class=tokenizer).train()
    assert (run_dir / "checkpoint-1").is_dir() and not comparison.is_trained(key)
    first_line = (run_dir / "metrics.jsonl").read_text().splitlines()[0]

    comparison.ensure_trained(key)
    assert comparison.trained_runs == [(key, 1)]
    assert comparison.is_trained(key)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and lines[0] == first_line  # step 1 kept from before the interruption, not redone
    assert json.loads((run_dir / "done.json").read_text())["resumed_from"] == 1


def test_learning_rate_is_chosen_on_validation_not_test(finished, data_dir, base_dir, tmp_path, tiny_spec):
    _, _, runs = finished
    runs_copy = tmp_path / "runs"
    shutil.copytree(runs, runs_copy)
    comparison = Comparison(
        tiny_spec(), data_dir=data_dir, base_dir=base_dir, runs_dir=runs_copy, progress=False, log=lambda _: None
    )
    # make validation and test disagree: 3e-4 is better on validation, 1e-4 on test
    for lr, val_acc, test_acc in ((1e-4, 0.1, 0.9), (3e-4, 0.8, 0.2)):
        path = comparison.run_dir(RunKey("trapo", lr, 0)) / "eval.json"
        cache = json.loads(path.read_text())
        for name, acc in (("val@2", val_acc), ("test@2", test_acc)):
            if name not in cache:  # the unchosen rate was never tested: give it a test entry anyway
                cache[name] = {**copy.deepcopy(cache["val@2"]), "key": "never-read"}
            for group in cache[name]["result"]["groups"].values():
                group["acc"] = acc
        path.write_text(json.dumps(cache))
    selection = comparison.lr_selection("trapo")
    assert selection["chosen"] == 3e-4
    assert selection["scores"] == {"1e-4": pytest.approx(0.1), "3e-4": pytest.approx(0.8)}
    assert comparison.trained_runs == []  # both rates were cached
    # the seed-1 run at the newly chosen rate does not exist yet: a budget of 0 new runs stops cleanly
    with pytest.raises(StopRequested, match="max-runs 0"):
        comparison.run(max_runs=0)


def test_report_writes_tables_json_and_plots(finished, tmp_path):
    _, result, _ = finished
    paths = write_report(
        result.summary, result.dynamics, tmp_path / "report", command="trapo compare --test", wall_seconds=12.0
    )
    assert set(paths) == {
        "results.md",
        "results.json",
        "dynamics.json",
        "dynamics.png",
        "guidance.png",
        "curves.png",
        "passk.png",
        "tradeoff.png",
    }
    for name, path in paths.items():
        assert path.stat().st_size > 0, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = paths["results.md"].read_text()
    for heading in (
        "Equal optimizer steps",
        "Equal wall-clock",
        "Paired comparison against TRAPO",
        "Learning-rate selection",
        "trapo compare --test",
        "**OOD avg**",
        "OOD d per seed",
        "## The paper's claims",
        "## Which code made these numbers",
    ):
        assert heading in text
    assert text.split("\n## ")[1].startswith("The paper's claims")  # the report leads with the claims
    data = json.loads(paths["results.json"].read_text())
    # claims with intervals, recomputable from the per-problem outcomes stored beside them
    assert [c["claim"] for c in data["claims"]] == [1, 2, 3, 4]
    assert [(c["verdict"], c["ci95"]) for c in claims_table(data)] == [
        (c["verdict"], c["ci95"]) for c in data["claims"]
    ]
    assert set(data["outcomes"]) == {"test", "passk", "val_sweep"} and set(data["late_gain"]) == {"trapo", "grpo"}
    assert set(data["leakage"]["per_seed"]["trapo"]["0"]) == {"no_t1", "no_t1_clean_t2", "t2_clean"}
    # the out-of-distribution tiers are test-only columns, averaged apart from the in-domain tiers
    assert data["ood"] == ["ood-t6", "ood-t7"] and data["columns"].index("ood") > data["columns"].index("in_domain")
    assert data["equal_steps"]["trapo"]["summary"]["ood"]["n"] == 2
    assert data["equal_steps"]["grpo"]["lr"] == 1e-4 and data["wall_seconds"] == 12.0
    dynamics = json.loads(paths["dynamics.json"].read_text())
    assert dynamics["trapo"]["steps"] == [1, 2] and "guidance/level_3" in dynamics["trapo"]["metrics"]


def test_a_grid_whose_best_rate_is_its_edge_is_extended(data_dir, base_dir, tmp_path, tiny_spec):
    spec = tiny_spec(methods=("grpo",), seeds=(1,), sweep_seed=0, lr_grid={"grpo": (1e-4,)}, lr_extensions=1)
    comparison = Comparison(spec, data_dir=data_dir, base_dir=base_dir, runs_dir=tmp_path, progress=False, log=print)
    selection = comparison.lr_selection("grpo")
    # a one-rate grid is its own top edge: one rate half a decade above is added, and no more (limit 1)
    assert selection["grid"] == ["1e-4"] and selection["added"] == ["3e-4"]
    assert set(selection["scores"]) == set(selection["retained"]) == {"1e-4", "3e-4"}
    assert selection["criterion"].endswith("at seed 0")
    trained = [(k.lr, k.seed) for k, _ in comparison.trained_runs]
    assert trained == [(1e-4, 0), (3e-4, 0)]
    status = comparison.status()
    assert status["runs_total"] == 3 and status["runs_done"] == 2  # the test seed 1 is still to run


def test_every_run_and_evaluation_records_its_code_outside_the_cache_keys(finished, data_dir, base_dir, tiny_spec):
    from trapo_lab.compare.provenance import code_label, code_provenance

    _, result, runs = finished
    here = code_provenance()
    run_dirs = [p for p in runs.iterdir() if (p / "done.json").is_file()]
    assert len(run_dirs) == 5
    for run_dir in run_dirs:
        assert json.loads((run_dir / "run.json").read_text())["code"] == here
        assert json.loads((run_dir / "done.json").read_text())["code"] == here
    entries = [e for p in runs.glob("*/eval.json") for e in json.loads(p.read_text()).values()]
    assert entries and all(e["result"]["code"] == here for e in entries)
    by_code = result.summary["provenance"]["by_code"]
    assert list(by_code) == [code_label(here)] and by_code[code_label(here)]["runs"] == 5

    # runs and evaluations cached before the code was recorded are still found, and count as unrecorded
    old = runs.parent / "runs-unrecorded"
    shutil.copytree(runs, old)
    run_dir = next(p for p in old.iterdir() if (p / "done.json").is_file())
    for name in ("run.json", "done.json"):
        data = json.loads((run_dir / name).read_text())
        del data["code"]
        (run_dir / name).write_text(json.dumps(data))
    cache = json.loads((run_dir / "eval.json").read_text())
    for entry in cache.values():
        del entry["result"]["code"]
    (run_dir / "eval.json").write_text(json.dumps(cache))
    again = Comparison(tiny_spec(), data_dir=data_dir, base_dir=base_dir, runs_dir=old, progress=False, log=print)
    by_code = again.run().summary["provenance"]["by_code"]
    assert again.trained_runs == [] and again.evaluations_computed == 0
    label = run_dir.name.rsplit("-", 1)[0]  # <method>-lr<lr>-s<seed>, without the hash
    stripped = sum(run == label for run, _, _ in again.evaluations_used)
    n_evals = len(again.evaluations_used)
    assert stripped > 0 and n_evals > stripped
    assert by_code == {
        code_label(here): {"runs": 4, "evaluations": n_evals - stripped},
        "unrecorded": {"runs": 1, "evaluations": stripped},
    }
