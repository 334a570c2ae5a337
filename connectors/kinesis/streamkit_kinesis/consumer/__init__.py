"""The KCL-style Kinesis consumer: leases, shard sync, one task per held shard.

>>> config = ConsumerConfig(app_name="orders-app", stream="orders")  # doctest: +SKIP
>>> await KinesisConsumer(config, endpoint).run(MyProcessor)         # doctest: +SKIP

- :mod:`.config` :class:`ConsumerConfig` and :class:`InitialPosition`;
- :mod:`.processor` the :class:`RecordProcessor` contract (and :class:`BaseRecordProcessor`);
- :mod:`.worker` :class:`KinesisConsumer` (``run(factory)`` or ``async for``);
- :mod:`.batches` the ``async for`` form and when it checkpoints;
- :mod:`.shard_task` what happens to one shard (parents, reads, loss, shutdown, SHARD_END);
- :mod:`.metrics` / :mod:`.events` typed snapshots and events.
"""

from streamkit_kinesis.leases import Checkpointer, LeaseLostError

from .batches import ConsumedBatch
from .config import ConsumerConfig, InitialPosition
from .errors import ConsumerError, ConsumerStateError
from .events import ConsumerEvent, ConsumerEventKind, ConsumerListener
from .metrics import ConsumerMetrics, ShardMetrics
from .processor import (
    BaseRecordProcessor,
    InitializationInput,
    ProcessorFactory,
    RecordProcessor,
)
from .shard_task import ShardCheckpointer, ShardOutcome
from .signals import install_signal_handlers
from .worker import ConsumerState, KinesisConsumer

__all__ = [
    "BaseRecordProcessor",
    "Checkpointer",
    "ConsumedBatch",
    "ConsumerConfig",
    "ConsumerError",
    "ConsumerEvent",
    "ConsumerEventKind",
    "ConsumerListener",
    "ConsumerMetrics",
    "ConsumerState",
    "ConsumerStateError",
    "InitialPosition",
    "InitializationInput",
    "KinesisConsumer",
    "LeaseLostError",
    "ProcessorFactory",
    "RecordProcessor",
    "ShardCheckpointer",
    "ShardMetrics",
    "ShardOutcome",
    "install_signal_handlers",
]
