"""Kinesis: producer, stream admin, and a KCL-style consumer with DynamoDB leases."""
