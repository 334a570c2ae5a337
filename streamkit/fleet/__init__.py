"""One streaming query on a fleet of worker processes: the engine half (no AWS, no Kafka).

- :mod:`~streamkit.fleet.fleet_plan`: which plans a fleet runs and how they split;
- :mod:`~streamkit.fleet.source_stage`: a source task's batch -> partial states -> chunks;
- :mod:`~streamkit.fleet.chunk`: the exchange record format (Arrow IPC + JSON header);
- :mod:`~streamkit.fleet.routing`: which exchange partition a group key goes to;
- :mod:`~streamkit.fleet.aggregation_stage`: an aggregation task's batch: dedup, merge,
  fleet watermark, eviction and emission, checkpoint;
- :mod:`~streamkit.fleet.exchange_task`: what every aggregation task keeps besides its
  operator's state (dedup map, shard maxima, fleet watermark), and its checkpoint;
- :mod:`~streamkit.fleet.source_progress`: which chunk of a source shard is applied next
  (duplicates, gaps, reordering);
- :mod:`~streamkit.fleet.chain_keys`, :mod:`~streamkit.fleet.chain_tail`: which chains
  (``drop_duplicates`` then an aggregation) a fleet runs, routed how, and the operators
  an aggregation task runs above the ``drop_duplicates``;
- :mod:`~streamkit.fleet.join_split`, :mod:`~streamkit.fleet.join_source`,
  :mod:`~streamkit.fleet.join_stage`, :mod:`~streamkit.fleet.join_state`: a join of two
  streams: which ones a fleet runs, a side's source task, the aggregation task's join and
  its checkpointed buffers (the engine side; workers refuse the query for now).
"""

from __future__ import annotations

from streamkit.fleet.aggregation_stage import AggregationStage
from streamkit.fleet.chunk import ChunkError, ChunkHeader, decode_chunk, encode_chunk, split_parts
from streamkit.fleet.fleet_plan import FleetPlan
from streamkit.fleet.routing import key_hash, partition_ids
from streamkit.fleet.source_progress import ChunkOrderError, SourceProgress
from streamkit.fleet.source_stage import SourceOutput, SourceStage

__all__ = [
    "AggregationStage",
    "ChunkError",
    "ChunkHeader",
    "ChunkOrderError",
    "FleetPlan",
    "SourceOutput",
    "SourceProgress",
    "SourceStage",
    "decode_chunk",
    "encode_chunk",
    "key_hash",
    "partition_ids",
    "split_parts",
]
