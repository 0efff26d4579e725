"""forgetless: show, measure and mitigate catastrophic forgetting.

Data flows one way: ``data`` (sources) -> ``scenarios`` (a Stream of Tasks) -> ``engine``
(one loop, with ``strategies``) -> ``Result`` -> ``metrics``, reports and storage. For a model
already in production: ``update`` (fine-tune it with a mitigation) and ``gate`` (compare it
with the deployed one on old-data slices), from :mod:`forgetless.production`.
"""

__version__ = "0.1.0"

from forgetless.errors import ConfigError, DataError, ForgetlessError

__all__ = [
    "ConfigError",
    "DataError",
    "FitConfig",
    "ForgetlessError",
    "Result",
    "__version__",
    "gate",
    "train",
    "update",
]

# Imported on first use, so that importing a light module of the package (the sweep workers'
# guard, the command line's parser) does not import torch first.
_LAZY = {
    "FitConfig": "forgetless.engine",
    "train": "forgetless.engine",
    "Result": "forgetless.result",
    "gate": "forgetless.production",
    "update": "forgetless.production",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'forgetless' has no attribute {name!r}")
