"""Queue-driven autoscaling of the worker pool.

`policy` decides (pure), `backends` apply (Kubernetes Deployment scale, local processes, none),
`autoscaler` runs the loop in the elected leader, `settings` holds `SHOAL_SCALER_*`.
"""
