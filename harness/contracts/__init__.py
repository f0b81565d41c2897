"""The contracts every layer may import: errors, the run record's schema, redaction, the endpoint
and the live-system interface, and two small file helpers.

`systems/` and `workloads/` import nothing else of `harness/`, and this package imports nothing of
`harness/` outside itself nor `systems/` or `workloads/` (import-linter checks both; see
pyproject.toml and docs/architecture.md).
"""
