"""The user's own model: ``FILE.py:FACTORY`` loaded by path, and example inputs for it.

Used by ``skiplab profile`` and ``skiplab gradients FILE.py:FACTORY``. Every failure is a
``ValueError`` with one line that says what to fix (the command line prints it and exits
with code 2): a missing file or factory, a file or factory that raises (its message
included), a factory that returns something other than a module, an input the model
rejects (the model's own message).
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from typing import Any, Callable

import torch
from torch import nn

from .errors import UserError

# Input dtypes by name: floats are drawn from N(0, 1), integers (token ids) from [0, vocab).
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "int64": torch.int64, "int32": torch.int32}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def parse_target(target: str) -> tuple[pathlib.Path, str]:
    """``"models/net.py:make"`` -> (path, "make")."""
    path, sep, name = target.rpartition(":")
    if not sep or not path or not name:
        raise UserError(f"{target!r}: give the model as FILE.py:FACTORY, e.g. examples/my_resnet.py:make_model")
    return pathlib.Path(path), name


def load_factory(target: str) -> Callable[[], Any]:
    """Import FILE.py by path (not from sys.path) and return its FACTORY."""
    path, name = parse_target(target)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the model as FILE.py:FACTORY")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    module_name = f"skiplab_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        raise UserError(f"{path}: importing it raised {_first_line(e)}") from None
    except SystemExit as e:  # a script's sys.exit at import: skiplab would have ended with its code, silent
        del sys.modules[module_name]
        raise UserError(f"{path}: importing it called sys.exit({e.code!r}); "
                        "put the script's own work under `if __name__ == '__main__':`") from None
    factory = getattr(module, name, None)
    if factory is None:
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                       and getattr(v, "__module__", None) == module_name)
        raise UserError(f"{path}: has no {name!r}" + (f"; it defines {', '.join(found)}" if found else ""))
    if not callable(factory):
        raise UserError(f"{path}: {name!r} is {_a(type(factory).__name__)}, not a callable returning a model")
    return factory


def load_model(target: str, seed: int = 0) -> nn.Module:
    """Call FACTORY with no arguments, under ``torch.manual_seed(seed)`` (the global RNG is
    put back afterwards), and check it returned a module."""
    factory = load_factory(target)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = factory()
        except Exception as e:
            raise UserError(f"{target}: the factory raised {_first_line(e)}") from None
        except SystemExit as e:
            raise UserError(f"{target}: the factory called sys.exit({e.code!r})") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"{target}: the factory returned {_a(type(model).__name__)}, not a torch.nn.Module")
    return model


def example_input(shape: tuple[int, ...], batch: int, dtype: str = "float32", vocab: int | None = None,
                  seed: int = 0) -> torch.Tensor:
    """A random batch ``(batch, *shape)``: N(0, 1) floats, or token ids in [0, vocab)."""
    if dtype not in DTYPES:
        raise UserError(f"dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UserError(f"batch: must be an integer >= 1, got {batch!r}")
    if not shape or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
        raise UserError(f"input_shape: sizes must be integers >= 1, got {tuple(shape)}")
    g = torch.Generator().manual_seed(seed)
    t = DTYPES[dtype]
    if t.is_floating_point:
        if vocab is not None:
            raise UserError(f"vocab: token ids need an integer dtype (--dtype int64), not {dtype}")
        return torch.randn(batch, *shape, generator=g).to(t)
    if vocab is None:
        raise UserError("vocab: integer inputs are token ids; give their range with --vocab V (V >= 1)")
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1:
        raise UserError(f"vocab: token ids are drawn from [0, V): V must be an integer >= 1, got {vocab!r}")
    return torch.randint(0, vocab, (batch, *shape), generator=g, dtype=t)


def check_accepts(model: nn.Module, x: torch.Tensor) -> None:
    """Run one forward without gradients; a model that rejects ``x`` raises ValueError with
    its own message."""
    try:
        with torch.no_grad():
            model(x)
    except Exception as e:
        raise UserError(f"the model rejects an input of shape {tuple(x.shape)} {str(x.dtype).removeprefix('torch.')}: "
                         f"{_first_line(e)}") from None
