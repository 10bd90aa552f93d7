"""drift-detector: watch ML models in production from their Kafka event streams.

``from detector import Monitor`` is the Python API (``detector.api``), imported on first
use so that the command line starts without loading the engine.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Monitor", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Monitor":
        from detector.api import Monitor
        return Monitor
    raise AttributeError(f"module 'detector' has no attribute {name!r}")
