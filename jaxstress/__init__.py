"""jaxstress: a JAX-jitted, differentiable Monte Carlo stress engine for the US Treasury market."""

import importlib.metadata

from . import _xla_flags  # noqa: F401  (first: XLA defaults before any computation)
from ._compile_cache import enable as enable_compile_cache  # noqa: F401  (public under this name)
from ._config import Params as Params
from ._config import Scenario as Scenario
from ._config import load_scenario as load_scenario
from ._config import shipped_scenarios as shipped_scenarios
from ._curve import par_yield_from_zero as par_yield_from_zero
from ._curve import zero_yields as zero_yields
from ._drivers import driver_gradients as driver_gradients
from ._drivers import driver_names as driver_names
from ._drivers import drivers as drivers
from ._drivers import set_drivers as set_drivers
from ._errors import ConfigError as ConfigError
from ._errors import DataError as DataError
from ._errors import SimulationError as SimulationError
from ._metrics import summarize as summarize
from ._portfolio import Portfolio as Portfolio
from ._portfolio import load_portfolio as load_portfolio
from ._sensitivities import SensitivityResult as SensitivityResult
from ._sensitivities import metric_function as metric_function
from ._sensitivities import sensitivities as sensitivities
from ._simulate import METRIC_NAMES as METRIC_NAMES
from ._simulate import SimulationResult as SimulationResult
from ._simulate import simulate as simulate
from ._simulate import simulate_draws as simulate_draws

try:
    __version__ = importlib.metadata.version("jaxstress")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover
    __version__ = "0+unknown"
