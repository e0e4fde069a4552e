"""Rewards named on a command line or in TRL's ``reward_funcs``: ``"math"``, ``"module:function"`` or
``"path/to/file.py:function"``, imported safely (whatever the module's import does wrong becomes one
``ValueError`` naming it), and several of them as one :class:`~trapo.rewards.adapters.RewardSet`."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trapo.rewards.adapters import RewardFunction, RewardKind, RewardSet, as_reward_function, default_reward

BUILTIN_REWARDS = {"math": default_reward}


def _exec_file(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"reward file {str(path)!r} does not exist")
    module_name = "trapo_user_reward_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import reward file {str(path)!r} (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _import_reward_module(where: str) -> Any:
    """The module of a reward spec (a file path or a module name). Whatever its import does wrong (an
    import or syntax error, an exception, ``sys.exit``) becomes one ``ValueError`` naming the module; only
    Ctrl-C passes through."""
    is_file = where.endswith(".py") or "/" in where or "\\" in where
    failed = f"importing reward file {where!r} failed" if is_file else f"cannot import module {where!r}"
    try:
        return _exec_file(Path(where)) if is_file else importlib.import_module(where)
    except (KeyboardInterrupt, FileNotFoundError):
        raise
    except SystemExit as err:
        raise ValueError(f"{failed}: it called sys.exit({err.code!r}) while being imported") from None
    except SyntaxError as err:
        raise ValueError(f"{failed}: SyntaxError: {err.msg} ({err.filename or where}, line {err.lineno})") from None
    except BaseException as err:
        raise ValueError(f"{failed}: {type(err).__name__}: {err}") from None


def load_reward(spec: str, kind: RewardKind | None = None) -> RewardFunction:
    """Load a reward from ``"module:function"``, ``"path/to/file.py:function"`` or a built-in name (``"math"``).

    The loaded callable goes through :func:`as_reward_function` (``kind`` as there).
    """
    if spec in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[spec]()
    if ":" not in spec:
        raise ValueError(
            f"reward {spec!r}: expected 'module:function', 'path/to/file.py:function' "
            f"or a built-in ({', '.join(BUILTIN_REWARDS)})"
        )
    where, attr = spec.rsplit(":", 1)
    if not where or not attr:
        raise ValueError(f"reward {spec!r}: both the module (or file) and the function name are needed")
    module = _import_reward_module(where)
    if not hasattr(module, attr):
        available = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ValueError(f"reward {spec!r}: {where!r} has no attribute {attr!r}; callables there: {available}")
    fn = getattr(module, attr)
    if not callable(fn):
        raise ValueError(f"reward {spec!r}: {attr!r} is a {type(fn).__name__}, not a function")
    reward = as_reward_function(fn, kind=kind)
    reward._trapo_spec = f"{Path(where).resolve()}:{attr}" if where.endswith(".py") or "/" in where else spec
    return reward


def reward_set(reward_funcs: Any, weights: Sequence[float] | None = None, *, conversational: bool = False) -> RewardSet:
    """TRL's ``reward_funcs`` (one or a list of: a callable in any supported signature, a built-in name
    such as ``"math"``, ``"module:function"`` or ``"file.py:function"``) as a :class:`RewardSet`."""
    items = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    functions = []
    for item in items:
        if isinstance(item, str):
            if item not in BUILTIN_REWARDS and ":" not in item:
                raise ValueError(
                    f"reward {item!r}: reward models (a model id in reward_funcs) are not supported; "
                    "pass a function, a built-in name (math) or 'module:function'"
                )
            functions.append(load_reward(item))
        elif callable(item) and not hasattr(item, "forward"):
            wrapped = as_reward_function(item, conversational=conversational)
            for flag in ("_trapo_process", "_trapo_builtin"):  # how the trainer bounds it (bounded_reward)
                if getattr(item, flag, False):
                    setattr(wrapped, flag, True)
            functions.append(wrapped)
        else:
            raise ValueError(f"reward {type(item).__name__}: reward models are not supported; pass a function")
    return RewardSet(functions, weights)
