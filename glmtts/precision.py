"""Weight precision of the engines that offer one (``glm-tts``, ``twin``): the names, what a
device can run, and the automatic low-memory choice.

An engine option ``dtype`` is one of :data:`DTYPE_CHOICES`. ``fp32`` is upstream GLM-TTS's own
precision; ``bf16`` and ``fp16`` halve the weights of the parts the engine casts; ``auto`` is
fp32 unless the caller (the synthesis session, ``synth``) predicts that fp32 will not fit the
device's free memory and a 16-bit load would (:func:`choose_auto`); on a CPU it is always fp32.

What a device cannot run is refused before anything loads (:func:`dtype_problem`), from facts
read off torch 2.13 (:class:`DeviceFacts`):

- fp16 on a CPU: torch computes it, but it saves no more memory than bf16, has a narrower range
  (largest value 65,504: activations of weights trained in fp32 can overflow), and only
  AVX512-FP16/AMX-FP16 processors have native fp16 kernels; elsewhere torch converts, and on a
  2-core AVX2 machine a matrix product took ~3x and a 1-D convolution ~12x the time of fp32.
- bf16 on a CPU that torch does not vectorise (``get_cpu_capability()`` says ``DEFAULT``):
  every bf16 operation would run as scalar conversions. On AVX2 without native bf16 kernels it
  runs (a matrix product ~3x, a convolution ~12x the time of fp32 on that machine): allowed,
  with a note (:func:`slow_note`); native with AVX512-BF16/AMX.
- bf16 on a CUDA device without bf16 (before Ampere): fp16 is the 16-bit choice there.

Nothing here imports the monitoring package: the caller passes the free memory, the predicted
peak and the policy's margin.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from glmtts.errors import DtypeUnsupportedError, InvalidRequestError

#: The precisions, widest first.
DTYPES = ("fp32", "bf16", "fp16")
#: What the ``dtype`` option accepts.
DTYPE_CHOICES = ("auto", *DTYPES)
#: Bytes per element.
ITEMSIZE = {"fp32": 4, "bf16": 2, "fp16": 2}
GiB = 1 << 30


def torch_dtype(name: str) -> Any:
    """``"fp32"`` / ``"bf16"`` / ``"fp16"`` -> the torch dtype.

    Raises:
        InvalidRequestError: another name (``auto`` included: resolve it first).
    """
    import torch

    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if name not in table:
        raise InvalidRequestError("dtype", f"unknown dtype {name!r}; choose one of "
                                           f"{', '.join(DTYPES)}")
    return table[name]


def check_choice(name: str) -> str:
    """``name`` if it is one of :data:`DTYPE_CHOICES` (``--dtype``, the engine option).

    Raises:
        InvalidRequestError: another name (field ``dtype``).
    """
    if name not in DTYPE_CHOICES:
        raise InvalidRequestError("dtype", f"dtype must be one of {', '.join(DTYPE_CHOICES)}, "
                                           f"not {name!r}")
    return name


@dataclass(frozen=True)
class DeviceFacts:
    """What torch says a device can compute in 16 bits.

    Attributes:
        kind: ``cpu`` or ``cuda``.
        cpu_capability: ``torch.backends.cpu.get_cpu_capability()`` (``AVX2``, ``AVX512``,
            ``DEFAULT``...).
        bf16_native: The CPU has native bf16 kernels (oneDNN: AVX512-BF16/AMX); CUDA: the GPU
            has bf16 (Ampere or newer), not counting torch's emulation.
        fp16_native: The CPU has native fp16 kernels (AVX512-FP16/AMX-FP16); CUDA: True.
        name: The GPU's name (CUDA), for messages.
    """

    kind: str
    cpu_capability: str | None = None
    bf16_native: bool = False
    fp16_native: bool = False
    name: str | None = None


def _mkldnn(probe: str) -> bool:
    import torch

    try:
        return bool(getattr(torch.ops.mkldnn, probe)())
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def device_facts(device: str) -> DeviceFacts:
    """Read :class:`DeviceFacts` of ``device`` (``cpu``, ``cuda``, ``cuda:N``) from torch (once
    per process: the app asks on every rerun)."""
    import torch

    if not device.startswith("cuda"):
        try:
            capability = str(torch.backends.cpu.get_cpu_capability())
        except AttributeError:  # torch < 2.0
            capability = None
        return DeviceFacts("cpu", capability, _mkldnn("_is_mkldnn_bf16_supported"),
                           _mkldnn("_is_mkldnn_fp16_supported"))
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    try:
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.3 has no emulation to leave out
        bf16 = torch.cuda.is_bf16_supported()
    try:
        name = torch.cuda.get_device_name(index)
    except (RuntimeError, AssertionError, ValueError):
        name = None
    return DeviceFacts("cuda", None, bool(bf16), True, name)


def half_dtype(facts: DeviceFacts) -> str:
    """The 16-bit precision for ``facts``' device: bf16 where it can run, else fp16 (CUDA)."""
    if facts.kind == "cpu" or facts.bf16_native:
        return "bf16"
    return "fp16"


def dtype_problem(dtype: str, device: str, facts: DeviceFacts | None = None) -> str | None:
    """Why ``device`` cannot run weights in ``dtype`` (one sentence that says what to choose
    instead), or None when it can. ``auto`` never has a problem (it picks what runs)."""
    if dtype in ("auto", "fp32"):
        return None
    facts = facts or device_facts(device)
    if facts.kind == "cpu":
        bf16_ok = facts.cpu_capability != "DEFAULT" or facts.bf16_native
        if dtype == "fp16":
            kernels = ("this processor has native fp16 kernels" if facts.fp16_native else
                       f"this processor ({facts.cpu_capability}) has no native fp16 kernels, "
                       f"so torch converts every operation (on a 2-core AVX2 machine a matrix "
                       f"product took ~3x and a convolution ~12x the time of fp32)")
            instead = "bf16 (the same memory) or fp32" if bf16_ok else "fp32"
            return (f"fp16 is refused on the CPU: it takes no less memory than bf16, its range "
                    f"(at most 65,504) can overflow, and {kernels}. Choose {instead}; fp16 is "
                    f"for CUDA GPUs without bf16")
        if dtype == "bf16" and not bf16_ok:
            return ("bf16 is refused on this CPU: torch reports no vector unit it uses "
                    "(capability DEFAULT), so every bf16 operation would run as scalar "
                    "conversions. Choose fp32")
        return None
    if dtype == "bf16" and not facts.bf16_native:
        gpu = facts.name or device
        return (f"bf16 is refused on {gpu}: the GPU has no bf16 arithmetic (it needs compute "
                f"capability 8.0, Ampere or newer). Choose fp16 (the same memory) or fp32")
    return None


def check_dtype(dtype: str, device: str, facts: DeviceFacts | None = None) -> None:
    """Raise :class:`DtypeUnsupportedError` when ``device`` cannot run ``dtype``."""
    check_choice(dtype)
    problem = dtype_problem(dtype, device, facts)
    if problem is not None:
        raise DtypeUnsupportedError(problem)


def slow_note(dtype: str, device: str, facts: DeviceFacts | None = None) -> str | None:
    """One line when ``dtype`` runs on ``device`` without native kernels (bf16 on a CPU
    without AVX512-BF16/AMX), else None."""
    if dtype != "bf16" or device.startswith("cuda"):
        return None
    facts = facts or device_facts(device)
    if facts.bf16_native:
        return None
    return (f"bf16 on this CPU ({facts.cpu_capability}, no native bf16 kernels): the weights "
            f"take half the memory, but torch converts every operation, so it runs slower "
            f"than fp32")


@dataclass(frozen=True)
class AutoChoice:
    """What ``dtype="auto"`` chose, and from which figures.

    Attributes:
        dtype: The precision to load.
        line: The one line said when a 16-bit precision was chosen (None for fp32).
        fp32_need_bytes: (fp32 weights + predicted peak) x (1 + margin), or None when not
            predicted (CPU, or a figure unknown).
        need_bytes: The same for the chosen precision.
        free_bytes: Free memory of the device the prediction was compared with.
        basis: Where the peak came from (``history``, ``estimate``, ``none``).
    """

    dtype: str
    line: str | None = None
    fp32_need_bytes: int | None = None
    need_bytes: int | None = None
    free_bytes: int | None = None
    basis: str = "none"

    def features(self) -> dict[str, Any]:
        """For the load event (History and the policy tell runs apart by them)."""
        return {"dtype_reason": self.line, "dtype_fp32_need_bytes": self.fp32_need_bytes,
                "dtype_need_bytes": self.need_bytes, "dtype_free_bytes": self.free_bytes,
                "dtype_peak_basis": self.basis}


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


def choose_auto(device: str, *, fp32_weights: int | None, half_weights: int | None,
                peak: int | None, free: int | None, margin: float, half: str = "bf16",
                basis: str = "none") -> AutoChoice:
    """The ``auto`` rule: fp32 on a CPU, and whenever (fp32 weights + peak) x (1 + margin)
    fits ``free``; otherwise ``half`` (bf16, or fp16 where bf16 cannot run), said in one line.
    A figure that is unknown keeps fp32 (nothing is predicted, nothing changes).

    Args:
        device: Where the model will load.
        fp32_weights: Predicted weights in fp32 (bytes).
        half_weights: Predicted weights in ``half``.
        peak: Predicted peak above the loaded weights (None: 0, the margin alone).
        free: Free memory of the device now.
        margin: The policy's safety margin (a fraction).
        half: The 16-bit precision the device runs.
        basis: Where ``peak`` came from, recorded with the choice.
    """
    if not device.startswith("cuda") or fp32_weights is None or free is None:
        return AutoChoice("fp32", free_bytes=free, basis=basis)
    extra = peak or 0
    need32 = round((fp32_weights + extra) * (1 + margin))
    if need32 <= free:
        return AutoChoice("fp32", None, need32, need32, free, basis)
    need16 = round(((half_weights or fp32_weights // 2) + extra) * (1 + margin))
    if need16 <= free:
        line = f"Loaded in {half}: fp32 needs ~{_gib(need32)}, {_gib(free)} free."
    else:
        line = (f"Loaded in {half}: fp32 needs ~{_gib(need32)} and {half} ~{_gib(need16)}, "
                f"{_gib(free)} free: it may not fit either.")
    return AutoChoice(half, line, need32, need16, free, basis)
