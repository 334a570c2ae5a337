"""streamkit: Spark Structured Streaming semantics and a KCL-style consumer, on Arrow."""

__version__ = "0.1.0"
