"""The sync engine: walk, compare, plan, transfer, safety.  Pure Python; no Dagster, database or Kubernetes."""

from .plan import Op, Plan
from .run import (FAILED, PARTIAL_FAILURE, SUCCESS, SyncOptions, SyncReport, plan_pair, run_sync,
                  split_batches, walk_pair)
from .safety import SafetyRefusal
from .workers import ApplyContext, OpResult, apply_batch
from .walk import TreeListing, WalkError, walk_tree

__all__ = ["Op", "Plan", "SyncOptions", "SyncReport", "run_sync", "walk_pair", "plan_pair", "split_batches",
           "SafetyRefusal", "ApplyContext", "OpResult", "apply_batch", "TreeListing", "WalkError", "walk_tree",
           "SUCCESS", "PARTIAL_FAILURE", "FAILED"]
