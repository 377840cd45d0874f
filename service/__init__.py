"""The HTTP service for integrators and fleets (``python -m glmtts serve``): an adapter beside
``ui/``, and the only package that imports FastAPI, Starlette or uvicorn.

- :mod:`service.settings`: what the service is started with, and the bind/token rule.
- :mod:`service.runtime`: the service's one synthesis session, its store, sampler, metrics and
  memory history, without any HTTP.
- :mod:`service.app`: the FastAPI application (``/v1/...`` and ``/metrics``).
- :mod:`service.server`: the command: build everything, run uvicorn, shut down cleanly.

Importing this package imports neither FastAPI nor uvicorn nor torch: only the modules that
need them do.
"""
