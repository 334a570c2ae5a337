"""Interoperability tests against real peers (the Java KCL)."""
