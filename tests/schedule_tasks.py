"""A task module declaring a schedule in code (loaded by real workers in the schedule tests)."""

from __future__ import annotations

import time

from shoal import Schedule, task


@task(schedule=Schedule(every_s=1, id="heartbeat-report", kwargs={"label": "hb"}, misfire_grace_s=30))
def heartbeat_report(label: str) -> dict[str, object]:
    return {"label": label, "ran_at": time.time()}
