"""skiplab.nn, the drop-in namespace: it re-exports every public merge module skiplab.skips
defines (so a new strategy's module cannot be forgotten there), each documented in the
namespace's docstring, and its doctest runs."""

import doctest
import importlib
import inspect
import pkgutil

import skiplab.nn as snn
from skiplab import skips
from skiplab.skips import Connection


def _public_connections() -> set[type]:
    """Every public Connection subclass defined in skiplab.skips' modules, and DenseBlock."""
    found = set()
    for info in pkgutil.iter_modules(skips.__path__):  # every file in skiplab/skips/, new ones too
        module = importlib.import_module(f"skiplab.skips.{info.name}")
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, Connection) and not name.startswith("_") \
                    and obj.__module__ == module.__name__:
                found.add(obj)
    return found | {skips.DenseBlock}


def test_every_merge_module_is_in_skiplab_nn_and_documented():
    exported = {getattr(snn, name) for name in snn.__all__}
    assert _public_connections() <= exported
    for cls in _public_connections():
        assert f":class:`{cls.__name__}`" in snn.__doc__, cls.__name__  # its rule, shapes and paper
        assert getattr(snn, cls.__name__) is cls  # the same class, not a copy


def test_the_namespace_doctest_runs():
    result = doctest.testmod(snn)
    assert result.attempted > 0 and result.failed == 0
