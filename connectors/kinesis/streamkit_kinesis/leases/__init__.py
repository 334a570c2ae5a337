"""KCL-style leases: one lease per shard in a lease table, taken, renewed and stolen by workers.

- :mod:`.model` the :class:`Lease` value and its transitions;
- :mod:`.store` the :class:`LeaseStore` contract; :mod:`.memory` and :mod:`.dynamodb`
  implement it;
- :mod:`.taker` the pure take/steal decision and the expiry tracker (own monotonic clock);
- :mod:`.renewer`, :mod:`.checkpointer`, :mod:`.held` renewal, checkpoints, the shared view;
- :mod:`.coordinator` schedules it all for one worker; :mod:`.sync` turns shards into leases;
- :mod:`.leader` elects the one worker that runs shard sync and lease cleanup.
"""

from streamkit_kinesis.leases.errors import LeaseLostError

from .checkpointer import Checkpointer
from .coordinator import LeaseCoordinator, LeaseCoordinatorError
from .dynamodb import DynamoDBLeaseStore
from .errors import (
    CheckpointOrderError,
    LeaseConflictError,
    LeaseNotFoundError,
    LeaseStoreError,
    LeaseStoreUnavailableError,
)
from .held import HeldLease, HeldLeases, LeaseEvent, LeaseEventKind, LeaseListener
from .leader import LeaderDecider, elect_leaders
from .memory import InMemoryLeaseStore
from .metrics import CallCounter, LeaseMetrics
from .model import LEADER_LEASE_KEY, Lease, check_checkpoint_advance
from .renewer import LeaseRenewer, RenewResult
from .store import LeaseStore
from .sync import SyncPlan, SyncResult, parents_done, plan_sync, sync_shards
from .taker import LeaseTracker, TakeDecision, decide_takes, is_expired

__all__ = [
    "LEADER_LEASE_KEY",
    "CallCounter",
    "CheckpointOrderError",
    "Checkpointer",
    "DynamoDBLeaseStore",
    "HeldLease",
    "HeldLeases",
    "InMemoryLeaseStore",
    "LeaderDecider",
    "Lease",
    "LeaseConflictError",
    "LeaseCoordinator",
    "LeaseCoordinatorError",
    "LeaseEvent",
    "LeaseEventKind",
    "LeaseListener",
    "LeaseLostError",
    "LeaseMetrics",
    "LeaseNotFoundError",
    "LeaseRenewer",
    "LeaseStore",
    "LeaseStoreError",
    "LeaseStoreUnavailableError",
    "LeaseTracker",
    "RenewResult",
    "SyncPlan",
    "SyncResult",
    "TakeDecision",
    "check_checkpoint_advance",
    "decide_takes",
    "elect_leaders",
    "is_expired",
    "parents_done",
    "plan_sync",
    "sync_shards",
]
