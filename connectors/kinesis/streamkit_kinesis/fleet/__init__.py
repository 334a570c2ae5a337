"""The fleet's Kinesis side: the exchange stream between source and aggregation tasks.

- :mod:`.exchange` creates (or checks) the exchange stream and maps partitions to shards;
- :mod:`.writer` puts a source batch's chunks to every partition, in order;
- :mod:`.two_phase` prepare -> put -> checkpoint (KCL's two-phase checkpoint) and the
  range a taking worker re-reads;
- :mod:`.reader` turns exchange reads back into chunk bytes in order.
"""
