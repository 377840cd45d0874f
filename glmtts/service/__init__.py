"""The HTTP service for integrators and fleets (``python -m glmtts serve``), and helpers that
other long commands and the Monitor page reuse.

- :mod:`glmtts.service.settings`: what the service is started with, and the bind/token rule.
- :mod:`glmtts.service.runtime`: the service's one synthesis session, its store, sampler,
  metrics and memory history, without any HTTP.
- :mod:`glmtts.service.app`: the FastAPI application (``/v1/...`` and ``/metrics``).
- :mod:`glmtts.service.server`: the command: build everything, run uvicorn, shut down cleanly.
- :mod:`glmtts.service.shutdown`: SIGINT/SIGTERM handling with cleanup callbacks (any command).
- :mod:`glmtts.service.snapshots`: CUDA memory history for pytorch.org/memory_viz (any caller).

Importing this package imports neither FastAPI nor uvicorn nor torch: only the modules that
need them do.
"""
