"""Entry point of the engine worker: ``PYTHON path/to/glmtts/worker/__main__.py --fd N``.

It finds this project's code by itself (nothing of ours is installed into the interpreter that
runs it, and ``PYTHONPATH`` is not needed): the folder two levels above this file goes first on
``sys.path``, and the script's own folder (``glmtts/worker``) is taken off it, so that nothing
of ours shadows a top-level module of the engine's (upstream's ``utils``, say). Kept free of
syntax newer than Python 3.6, so an old interpreter still reads it and says what is wrong.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

if __name__ == "__main__":
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from glmtts.worker.server import main

    sys.exit(main())
