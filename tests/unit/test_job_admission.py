"""The cluster-wide job ledger: leases, not counters, so nothing goes stale."""

from __future__ import annotations

import time

from serve_app.jobs.admission import Ledger, LocalAdmission, admission_for_replica


def test_admits_up_to_the_limit_then_counts_the_refusal() -> None:
    ledger = Ledger()
    assert [ledger.admit(f"j{i}", 3, 30) for i in range(3)] == [None, None, None]
    assert ledger.admit("j3", 3, 30) == 3
    assert ledger.admit("j1", 3, 30) is None  # a job already held is renewed, not refused
    ledger.release("j0")
    assert ledger.admit("j3", 3, 30) is None and ledger.count() == 3


def test_entries_lapse_unless_renewed() -> None:
    ledger = Ledger()
    ledger.admit("kept", 2, 0.2)
    ledger.admit("gone", 2, 0.2)  # its replica died: nobody renews it
    for _ in range(3):
        time.sleep(0.1)
        ledger.renew(["kept"], 0.2)
    assert ledger.count() == 1 and ledger.admit("new", 2, 30) is None


def test_a_restarted_ledger_fills_up_again_from_renewals() -> None:
    ledger = Ledger()  # a fresh actor after a restart: no stale count
    ledger.renew(["a", "b"], 30)  # the holders' next heartbeat
    assert ledger.count() == 2 and ledger.admit("c", 2, 30) == 2


async def test_outside_a_replica_the_ledger_is_local() -> None:
    admission = admission_for_replica()
    assert isinstance(admission, LocalAdmission)
    assert await admission.admit("x", 1, 30) is None
    assert await admission.admit("y", 1, 30) == 1
    await admission.release("x")
    assert await admission.admit("y", 1, 30) is None
