"""Test-only start-up hook (on PYTHONPATH of a worker that runs the GLM-TTS stand-in): the
stand-in runs on the CPU and needs none of upstream's packages, so the engine's CUDA guard and
package check are turned off before the worker starts, as the upstream kit's shim does for the
real code. Never used outside tests."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if os.environ.get("GLMTTS_TEST_STANDIN") == "1":
    sys.path.insert(0, ROOT)
    import glmtts.engines.glm_tts.checkout as _checkout

    _checkout.REQUIRES_CUDA = False
    _checkout.UPSTREAM_PACKAGES = {}
    sys.path.remove(ROOT)
