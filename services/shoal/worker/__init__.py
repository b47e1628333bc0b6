"""Shoal's worker: claims tasks from Redis, runs them, reports their outcomes.

`python -m shoal.worker` (or `shoal worker`) runs one worker process. Task authors do
not import this package: they use `shoal.task`, `shoal.Retry`, `shoal.Fail` and `shoal.Schedule`.
"""
