"""A loopback simulator of the Iterable REST API, backed by a deterministic dataset."""

from .data import Dataset, SimulatorConfig
from .events import EXPORT_DATA_TYPES
from .server import Fault, RequestRecord, Simulator

__all__ = ["EXPORT_DATA_TYPES", "Dataset", "Fault", "RequestRecord", "Simulator", "SimulatorConfig"]
