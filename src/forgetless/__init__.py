"""forgetless: show, measure and mitigate catastrophic forgetting.

Data flows one way: ``data`` (sources) -> ``scenarios`` (a Stream of Tasks) -> ``engine``
(one loop, with ``strategies``) -> ``Result`` -> ``metrics``, reports and storage. For a model
already in production: ``update`` (fine-tune it with a mitigation) and ``gate`` (compare it
with the deployed one on old-data slices), from :mod:`forgetless.production`.
"""

__version__ = "0.1.0"

from forgetless.engine import FitConfig, train
from forgetless.errors import ConfigError, DataError, ForgetlessError
from forgetless.production import gate, update
from forgetless.result import Result

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
