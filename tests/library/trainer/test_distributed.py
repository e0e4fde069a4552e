"""Two processes on CPU (gloo): with DDP they make the same update as one process; with ``--fsdp full_shard``
(torch's FSDP2) each holds half of the model, trains to the same weights, and resumes exactly after a SIGKILL.

``accelerate launch --cpu --num_processes 2`` starts *one* process (accelerate's simple launcher; multi-CPU
runs need mpirun), so the processes are started with ``torchrun`` and ``ACCELERATE_USE_CPU=true``, which
accelerate turns into a 2-process gloo group (``DistributedType.MULTI_CPU``); the worker records the number
of processes the trainer saw."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
# TRAPO with rollouts and a KL term (a sharded reference model); 3 prompts a step over 2 processes and at most 4
# trajectories a mini-batch: the processes have different numbers of mini-batches (idle passes keep them in step)
FSDP_STEPS = {"max_steps": 3, "beta": 0.01, "prompts_per_step": 3, "mini_batch_size": 4}
FSDP_RUN = ["trapo", "--fsdp", "full_shard", "--save_steps", "1", *(f"--{k}={v}" for k, v in FSDP_STEPS.items())]

sys.path.insert(0, str(HERE))
try:
    import dist_worker
finally:
    sys.path.remove(str(HERE))


def _torchrun(out: Path, *args: str) -> subprocess.CompletedProcess:
    """``dist_worker.py out *args`` on 2 processes, in a session of its own (a worker may SIGKILL the job)."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.is_file():
        pytest.skip("torchrun is not installed next to this Python")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
        "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path]),
    }
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(port), str(HERE / "dist_worker.py")]
    return subprocess.run(
        [*cmd, str(out), *args], env=env, capture_output=True, text=True, timeout=600, start_new_session=True
    )


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=f"{what}: {k} differs")


@pytest.mark.slow
def test_two_processes_update_like_one(tmp_path):
    methods = ["sft", "trapo"]
    proc = _torchrun(tmp_path / "two", *methods)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for method in methods:
        assert (tmp_path / "two" / method / "processes.txt").read_text() == "2"  # really two processes
        one = load_file(dist_worker.run(method, tmp_path / "one") / "model.safetensors")
        two = load_file(tmp_path / "two" / method / "final" / "model.safetensors")
        assert one.keys() == two.keys()
        for k in one:
            torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5, msg=f"{method}: {k} differs")
        # the metrics of the 2-process run were written once, by the main process
        lines = (tmp_path / "two" / method / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == 2


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> Path:
    """An uninterrupted 2-process ``--fsdp full_shard`` run (FSDP_RUN), a checkpoint after each step."""
    out = tmp_path_factory.mktemp("fsdp")
    proc = _torchrun(out, *FSDP_RUN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "trapo"


@pytest.mark.slow
def test_fsdp_shards_and_trains_like_one_process(fsdp_run, tmp_path):
    from transformers import AutoModelForCausalLM

    assert (fsdp_run / "processes.txt").read_text() == "2"
    for rank in (0, 1):  # each process holds about half of the parameter elements
        counts = json.loads((fsdp_run / f"elements-{rank}.json").read_text())
        assert counts["local"] <= 0.55 * counts["total"], counts
    rows = [json.loads(line) for line in (fsdp_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["fsdp/local_param_fraction"] <= 0.55 for r in rows)
    # the optimizer state is saved sharded (torch.distributed.checkpoint: one file per process)
    assert len(list((fsdp_run / "checkpoint-3" / "optimizer").glob("*.distcp"))) == 2
    # final/ is a whole model in Hugging Face layout (the tied head saved once, as save_pretrained does)
    two = load_file(fsdp_run / "final" / "model.safetensors")
    assert json.loads((fsdp_run / "final" / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]
    loaded = AutoModelForCausalLM.from_pretrained(fsdp_run / "final")
    torch.testing.assert_close(loaded.model.norm.weight, two["model.norm.weight"], rtol=0, atol=0)
    # the same 3 steps in one process: the weights agree to float32 summation order (measured: < 7e-6)
    one = load_file(dist_worker.run("trapo", tmp_path, **FSDP_STEPS) / "model.safetensors")
    _close(two, one, 1e-5, "FSDP vs one process")


@pytest.mark.slow
def test_fsdp_resumes_exactly_after_sigkill(fsdp_run, tmp_path):
    killed = _torchrun(tmp_path, *FSDP_RUN, "--kill_at", "2")  # every process SIGKILLed in the third step
    assert killed.returncode != 0
    out = tmp_path / "trapo"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert not (out / "final").exists()
    resumed = _torchrun(tmp_path, *FSDP_RUN, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    _close(load_file(out / "final" / "model.safetensors"), load_file(fsdp_run / "final" / "model.safetensors"), 0, "")
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
