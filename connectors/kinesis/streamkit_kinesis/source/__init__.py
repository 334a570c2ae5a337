"""A Kinesis stream as a streaming source of the engine (``sk.read_stream.kinesis``).

- :mod:`.stream_source` :class:`KinesisStreamSource` (its exactly-once steps);
- :mod:`.alignment` the lease table follows the query's checkpoint;
- :mod:`.buffers` per-shard queues between the consumer and the engine;
- :mod:`.positions` source offsets (sequence numbers, SHARD_END) and their order;
- :mod:`.tips` the current end of shards, for ``available_now``, found by the readers
  themselves (:mod:`.tip_watch`) up to a cut time read from the server (:mod:`.cut_time`);
- :mod:`.options` the source's consumer settings; :mod:`.sampling` records for schema
  inference; :mod:`.errors` :class:`KinesisSourceError`.
"""

from streamkit_kinesis.source.errors import KinesisSourceError
from streamkit_kinesis.source.stream_source import KinesisStreamSource

__all__ = ["KinesisSourceError", "KinesisStreamSource"]
