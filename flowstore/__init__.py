"""flowstore: an offline-first feature store for action recognition datasets."""

__version__ = "0.1.0"
