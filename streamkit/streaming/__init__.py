"""Structured Streaming: micro-batches into an unbounded table, incremental queries."""
