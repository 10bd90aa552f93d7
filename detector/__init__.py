"""drift-detector: watch ML models in production from their Kafka event streams."""

__version__ = "0.1.0"
