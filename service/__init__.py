"""The HTTP service for integrators and fleets (``python -m glmtts serve``): an adapter beside
``ui/``, and the only package that imports FastAPI, Starlette or uvicorn.

- :mod:`service.settings`: what the service is started with, and the bind/token rule.
- :mod:`service.runtime`: the service's one synthesis session, its store, sampler, metrics and
  memory history, without any HTTP.
- :mod:`service.app`: the FastAPI application (``/v1/...`` and ``/metrics``).
- :mod:`service.openai_api`: the OpenAI-compatible routes (``/v1/audio/speech``, ``/v1/models``,
  ``/v1/voices``, ``/health``, ``/ready``), on the same synthesis path; with
  :mod:`service.audio_formats` (output formats) and :mod:`service.voices` (registered voices).
- :mod:`service.server`: the command: build everything, run uvicorn, shut down cleanly.

Importing this package imports neither FastAPI nor uvicorn nor torch: only the modules that
need them do.
"""
