"""A loopback simulator of the Iterable REST API, backed by a deterministic dataset."""

from .data import Dataset, SimulatorConfig
from .events import EXPORT_DATA_TYPES
from .export_jobs import ExportJobsConfig
from .server import Fault, RequestRecord, Simulator

__all__ = ["EXPORT_DATA_TYPES", "Dataset", "ExportJobsConfig", "Fault", "RequestRecord", "Simulator", "SimulatorConfig"]
