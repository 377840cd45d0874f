"""Batch synthesis from a JSONL file that never loses a line.

- :mod:`glmtts.batch.tasks`: read and check the JSONL (every problem per line, nothing raised);
- :mod:`glmtts.batch.runner`: run the valid lines through a synthesis session, one failure never
  stopping the rest, each result durable as soon as it ends (``--resume`` continues);
- :mod:`glmtts.batch.output`: atomic WAVs, the fsynced manifest, the folder lock, the results zip;
- :mod:`glmtts.batch.files`: uploads, server paths and run folders for the app;
- :mod:`glmtts.batch.command`: ``python -m glmtts batch``.

No Streamlit here: the Batch page and the command line both follow the same runner.
"""

from glmtts.batch.output import (
    MANIFEST_NAME,
    BatchOutputError,
    read_manifest,
    write_wav_atomic,
    zip_results,
)
from glmtts.batch.runner import STATUSES, BatchRunner, LineResult, Progress, run_batch
from glmtts.batch.tasks import (
    MAX_PROMPT_SECONDS,
    BatchInputError,
    BatchPlan,
    BatchTask,
    InvalidLine,
    load_tasks,
    parse_tasks,
    safe_stem,
)

__all__ = [
    "MANIFEST_NAME",
    "MAX_PROMPT_SECONDS",
    "STATUSES",
    "BatchInputError",
    "BatchOutputError",
    "BatchPlan",
    "BatchRunner",
    "BatchTask",
    "InvalidLine",
    "LineResult",
    "Progress",
    "load_tasks",
    "parse_tasks",
    "read_manifest",
    "run_batch",
    "safe_stem",
    "write_wav_atomic",
    "zip_results",
]
