"""Two processes on CPU (gloo) make the same update as one process.

``accelerate launch --cpu --num_processes 2`` starts *one* process (accelerate's simple launcher; multi-CPU
runs need mpirun), so the processes are started with ``torchrun`` and ``ACCELERATE_USE_CPU=true``, which
accelerate turns into a 2-process gloo group (``DistributedType.MULTI_CPU``); the worker records the number
of processes the trainer saw."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_two_processes_update_like_one(tmp_path):
    if shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("torchrun is not installed next to this Python")
    sys.path.insert(0, str(HERE))
    try:
        import dist_worker
    finally:
        sys.path.remove(str(HERE))
    methods = ["sft", "trapo"]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
        "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path]),
    }
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        str(Path(sys.executable).parent / "torchrun"),
        "--nproc_per_node",
        "2",
        "--master_port",
        str(port),
        str(HERE / "dist_worker.py"),
        str(tmp_path / "two"),
        *methods,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
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
