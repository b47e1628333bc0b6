"""docs/kubernetes.md's worked scaling example is what the real policy does.

The table is parsed and replayed through `shoal.scheduler.scaling.policy.decide` with the
chart's default autoscaling values, one decision every `intervalSeconds`, the load staying as in
the last row shown between rows.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from shoal.scheduler.scaling.policy import ScalingInput, decide

ROOT = Path(__file__).resolve().parents[1]


def _example_rows() -> list[tuple[int, int, int, int, int]]:
    text = (
        (ROOT / "docs" / "kubernetes.md").read_text().split("### Worked example", 1)[1].split("\n### ", 1)[0]
    )
    rows = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].isdigit():
            t, ready, running, before, after = (int(cell) for cell in cells[:5])
            rows.append((t, ready, running, before, after))
    return rows


def test_worked_example_is_what_the_policy_decides() -> None:
    values = yaml.safe_load((ROOT / "charts" / "shoal" / "values.yaml").read_text())
    scaling, concurrency = values["autoscaling"], values["worker"]["concurrency"]
    rows = _example_rows()
    assert len(rows) >= 10
    shown = {t: (ready, running, before, after) for t, ready, running, before, after in rows}
    interval = int(scaling["intervalSeconds"])
    recent: tuple = ()
    current, load = 0, (0, 0)
    for now in range(0, rows[-1][0] + interval, interval):
        if now in shown:
            load = shown[now][:2]
            assert current == shown[now][2], f"t={now}: the table says {shown[now][2]} workers before"
        decision = decide(
            ScalingInput(
                ready_by_queue={"default": load[0]},
                running=load[1],
                current=current,
                concurrency=concurrency,
                min_replicas=scaling["minReplicas"],
                max_replicas=scaling["maxReplicas"],
                max_step_up=scaling["maxStepUp"],
                max_step_down=scaling["maxStepDown"],
                scale_down_window_s=scaling["scaleDownWindowSeconds"],
                recent=recent,
            ),
            now,
        )
        if now in shown:
            assert decision.desired == shown[now][3], f"t={now}: policy says {decision.reason}"
        recent, current = decision.recent, decision.desired
