"""Fault-injection suite (`make chaos`): real Redis, scheduler and worker processes under failure.

Each test submits a mixed workload, injects one fault, and checks the invariants in
`chaos.invariants`; the figures each test measures are collected by `chaos.report`.
"""
