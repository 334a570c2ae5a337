"""Public test helpers of the Kinesis connector; imported only by tests, never by the
connector itself (``streamkit_kinesis_tests/test_layout.py`` checks it).

Failures are injected by wrapping REAL clients and stores (as KCL's
``ExceptionThrowingLeaseRefresher``), so whatever is not injected still goes over the wire:

- :mod:`.faults` :class:`~.faults.ExceptionThrowingKinesisClient`: a boto3 Kinesis client
  that raises botocore's own error on chosen calls, and fails chosen PutRecords entries;
- :mod:`.leases` :class:`~.leases.ExceptionThrowingLeaseStore` (around a lease store),
  :class:`~.leases.ExceptionThrowingClient` (around a DynamoDB client),
  :class:`~.leases.FakeClock` (a monotonic clock moved by hand) and
  :func:`~.leases.new_store` (a fresh DynamoDB or in-memory lease store);
- :mod:`.streams` :func:`~.streams.fresh_stream` (a stream created and deleted around a
  test), :func:`~.streams.unique` names, and plain-boto3 ``read_*_blocking`` /
  ``put_blocking`` that do not go through the code under test.
"""
