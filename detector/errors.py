"""Exceptions raised by drift-detector.

The tree::

    DriftDetectorError          root: catch this to catch everything of ours
    ├── ConfigError             invalid settings; the CLI exits 2 naming the key
    ├── BrokerError             the bundled test/demo broker could not start
    ├── SourceError             a fatal Kafka error; the service exits non-zero
    ├── SourceUnavailable       no broker answers yet; the service retries
    ├── CheckpointError         (detector.state) a checkpoint cannot be used; ``reason``
    │                           says why (``detector.state.REASONS``)
    └── stores.StoreError       a state store cannot read or write (``reason``, ``detail``)

A malformed *event* is never an exception: ``events.decode`` returns a
``Rejection`` that is counted and skipped.
"""


class DriftDetectorError(Exception):
    """Root of every error drift-detector raises on purpose."""


class ConfigError(DriftDetectorError):
    """Settings are invalid; ``str(err)`` names every offending key."""


class BrokerError(DriftDetectorError):
    """The bundled broker binary is missing or did not become ready."""


class SourceError(DriftDetectorError):
    """The event source failed in a way the service cannot recover from."""


class SourceUnavailable(DriftDetectorError):
    """No broker answered; retrying later may succeed."""
