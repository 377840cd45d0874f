"""Engines in a worker process: any engine, run under another interpreter (upstream GLM-TTS's
own environment) in a child process, over a small versioned protocol.

- :mod:`glmtts.worker.protocol`: frames and messages (standard library only).
- :mod:`glmtts.worker.server`: the worker side (Python 3.10+, no app dependencies).
- :mod:`glmtts.worker.client`: the app side: the process, its calls, its faults.
- :mod:`glmtts.worker.engine`: :class:`WorkerEngine`, an ``Engine`` like the others.

This package module imports nothing: the worker imports it under interpreters that lack the
app's dependencies.
"""
