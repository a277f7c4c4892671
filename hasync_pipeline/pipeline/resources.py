"""The run's sync session as a Dagster resource: set up with the run, torn down with it.

A session holds what cannot travel through an IO manager: the held lease (with its heartbeat thread), the
open, locked opslog, the two walked trees and the plan.  The sync jobs use the in-process executor (a step
costs ~0.1 s there against ~2 s for a process per step), so every step of a run sees the same resource
instance; Dagster tears it down when the run ends - success, failure or termination - and the teardown
closes the session: opslog closed with the run's status, lease given back.

Re-execution and step retries: a step that finds no session (a re-execution from failure starts a new run
that skips the steps that succeeded; a retry may land in a new process) builds one again from the run's
settings and catches up - lease, walk, plan.  A sync is of the current state, so the new plan holds exactly
what is still to do; the first batch step of such a run applies all of it (the old batch numbers refer to
the old plan), the others have nothing left.  Each attempt is its own audit iteration.
"""

from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from ..audit import AuditStore, DsnError
from ..engine.session import SyncSession
from ..pairs import RegistryError, load_registry, sides
from ..session_factory import build_session
from ..settings import SettingError
from .deployment import HaSyncDeployment

# how far a session has come, in step order
STARTED, WALKED, PLANNED = 1, 2, 3


class RunSettingsError(Exception):
    """The run's settings (pairs.toml, environment, run config) are unusable; the message says which."""


class SessionFailed(Exception):
    """An earlier step of this run failed and ended its session: the run's later steps do not start another."""


class SyncRun(dg.ConfigurableResource):  # type: ignore[misc]  # pydantic model with Dagster's metaclass
    """One sync run's session, shared by its steps (see the module docstring)."""

    ha_sync: HaSyncDeployment  # where data, lease, logs are: the deployment's settings

    _session: SyncSession | None = PrivateAttr(default=None)
    _store: AuditStore | None = PrivateAttr(default=None)
    _reached: int = PrivateAttr(default=0)
    _resumed: bool = PrivateAttr(default=False)
    _applied_all: bool = PrivateAttr(default=False)
    # (run id, step key, why) of a session a step's failure ended
    _failed: tuple[str, str, str] | None = PrivateAttr(default=None)
    _run_id: str = PrivateAttr(default="")  # the Dagster run of the session
    _attempt: int = PrivateAttr(default=0)  # sessions that run has started (a step retry starts another)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._session, self._store, self._reached, self._failed = None, None, 0, None
        self._run_id, self._attempt = "", 0

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.end("the run ended before the sync finished (terminated, or a step failed)")

    # ---- building and catching up ------------------------------------------------------------------
    def start(self, run_id: str, pair: str, direction: str, overrides: dict[str, Any]) -> SyncSession:
        """A new session for this run (its lease not yet taken)."""
        self.end("replaced by a new session")
        try:
            registry = load_registry()
            settings = registry.settings_for(pair, overrides=overrides, environ=self.ha_sync.environ())
            store = AuditStore(settings.db_dsn, settings.db_timeout)
        except (SettingError, RegistryError, DsnError) as exc:
            raise RunSettingsError(str(exc)) from None
        src, dest = registry.get(pair).endpoints(direction, settings)
        self._attempt = self._attempt + 1 if self._run_id == run_id else 1
        self._run_id = run_id
        # each session is its own audit iteration: a second one in the same run (a step retry) gets its own id,
        # or flushing it would count as flushing the first again (run ids are unique) and its record be lost
        audit_id = run_id if self._attempt == 1 else f"{run_id}-{self._attempt}"
        self._store = store
        self._session = build_session(
            settings,
            settings.sync_options(),
            store,
            run_id=audit_id,
            pair=pair,
            direction=direction,
            src=src,
            dest=dest,
            labels=sides(direction),
            dagster_run_id=run_id,
        )
        self._reached, self._resumed, self._applied_all = 0, False, False
        return self._session

    def reached(self, step: int) -> None:
        self._reached = max(self._reached, step)

    def session(
        self, run_id: str, pair: str, direction: str, overrides: dict[str, Any], needs: int, step: str = ""
    ) -> SyncSession:
        """The run's session, brought at least to step `needs` (STARTED, WALKED or PLANNED): a run that
        re-executes from a later step builds it again and catches up.  Raises RunEnded like the steps."""
        if self._failed is not None and self._failed[0] == run_id:
            if self._failed[1] != step:
                raise SessionFailed(f"an earlier step failed and ended this run's sync ({self._failed[2]})")
            self._failed = None  # a retry of the step that failed: it starts the sync again
        session = self._session
        if session is None or self._run_id != run_id:
            session = self.start(run_id, pair, direction, overrides)
            self._resumed = True
        if self._reached < STARTED:
            session.preflight()
            self.reached(STARTED)
        if needs >= WALKED and self._reached < WALKED:
            session.walk()
            self.reached(WALKED)
        if needs >= PLANNED and self._reached < PLANNED:
            session.plan()
            self.reached(PLANNED)
        return session

    def batches_for(self, index: int | None) -> list[int]:
        """The batches a step applies: batch `index` of the plan (None: the finish step, none).  In a session
        rebuilt mid-run, whose plan is not the one the batch numbers refer to: all of its batches, at the
        first step that asks - a batch step, or the finish step of a run re-executed from there - then none."""
        assert self._session is not None
        if not self._resumed:
            return [] if index is None else [index]
        if self._applied_all:
            return []
        self._applied_all = True
        return list(range(len(self._session.batches)))

    def end(self, reason: str, failed_step: str = "") -> Any:
        """Close the session (recorded as failed for `reason` if it had not ended); idempotent.  `failed`:
        `failed_step`: that step failed - the run's other steps must not build a new session (a retry of that
        step, or a new run, may)."""
        session, store = self._session, self._store
        if failed_step and session is not None:
            self._failed = (self._run_id, failed_step, reason)
        self._session, self._store, self._reached = None, None, 0
        try:
            return session.close(reason) if session is not None else None
        finally:
            if store is not None:
                store.dispose()
