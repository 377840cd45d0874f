"""Read a Piper voice's ONNX file into a :class:`VitsVoice` state dict, by parameter name.

Most initializers of a Piper export carry their PyTorch names. The exceptions, handled here:
``sid`` is the phoneme embedding; the flow's weight-normalised convolutions were folded into
anonymous ``onnx::Conv_*`` tensors, named here through the scope of the node that consumes them;
the duration predictor's first affine flow kept only ``exp(-logs)`` as a folded constant.
The architecture itself (widths, depths, kernels, dilations, strides) is read from the weights'
shapes and the graph's convolution attributes, so other Piper voices of the same family load too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glmtts.engines.piper.vits import VitsConfig
from glmtts.errors import VoiceError

_EXP_CONSTANT = re.compile(r"/dp/flows\.0/Exp(_\d+)?_output_0$")


@dataclass(frozen=True)
class ConvAttrs:
    """Attributes of one convolution node of the graph."""

    dilation: int
    stride: int


def _node_param_name(node_name: str, suffix: str) -> str:
    """``/flow/flows.0/enc/in_layers.0/Conv`` -> ``flow.flows.0.enc.in_layers.0.weight``."""
    scope = node_name.strip("/").rsplit("/", 1)[0]
    return scope.replace("/", ".") + "." + suffix


def read_onnx_voice(path: Path) -> tuple[dict[str, np.ndarray], dict[str, ConvAttrs]]:
    """Return ``(named weights, conv attributes by weight name)`` from a Piper ONNX file.

    Raises:
        VoiceError: the file is not an ONNX model or not a VITS voice export.
    """
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except (OSError, ValueError, DecodeError) as exc:
        raise VoiceError(f"{path} is not a readable ONNX model: {exc}") from exc
    if not model.graph.initializer:
        raise VoiceError(f"{path} holds no weights: not a Piper voice export")

    raw = {init.name: init for init in model.graph.initializer}
    weights: dict[str, np.ndarray] = {}
    attrs: dict[str, ConvAttrs] = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 2:
            continue
        values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        conv = ConvAttrs(dilation=int(values.get("dilations", [1])[0]),
                         stride=int(values.get("strides", [1])[0]))
        wname = node.input[1]
        if wname.startswith("onnx::") and wname in raw:
            torch_name = _node_param_name(node.name, "weight")
            weights[torch_name] = numpy_helper.to_array(raw[wname])
            wname = torch_name
        attrs[wname] = conv

    for name, init in raw.items():
        if name == "sid":
            weights["enc_p.emb.weight"] = numpy_helper.to_array(init)
        elif _EXP_CONSTANT.search(name):
            weights["dp.flows.0.logs"] = -np.log(numpy_helper.to_array(init))
        elif not name.startswith(("onnx::", "/")) and "." in name:
            weights[name] = numpy_helper.to_array(init)
    if "enc_p.emb.weight" not in weights or "dec.conv_pre.weight" not in weights:
        raise VoiceError(f"{path} is not a Piper VITS voice (no phoneme embedding or decoder)")
    return weights, attrs


def _count(weights: dict[str, np.ndarray], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for n in weights if (m := rx.fullmatch(n))})


def infer_config(weights: dict[str, np.ndarray], attrs: dict[str, ConvAttrs]) -> VitsConfig:
    """Derive the network's hyper-parameters from weight shapes and graph attributes.

    Raises:
        VoiceError: the weights describe an architecture this module does not implement.
    """
    try:
        n_sym, hidden = weights["enc_p.emb.weight"].shape
        rel = weights["enc_p.encoder.attn_layers.0.emb_rel_k"].shape
        ffn = weights["enc_p.encoder.ffn_layers.0.conv_1.weight"].shape
        n_ups = _count(weights, r"dec\.ups\.(\d+)\.weight")
        n_blocks = _count(weights, r"dec\.resblocks\.(\d+)\.convs\.0\.weight")
        if n_blocks == 0 or n_ups == 0:
            raise VoiceError("decoder uses residual blocks of type 1, which are not supported "
                             "(only Piper's resblock '2' voices, such as 'medium', are)")
        per = n_blocks // n_ups
        ups = [f"dec.ups.{i}.weight" for i in range(n_ups)]
        blocks = range(per)
        n_block_convs = _count(weights, r"dec\.resblocks\.0\.convs\.(\d+)\.weight")
        cfg = VitsConfig(
            num_symbols=int(n_sym),
            hidden=int(hidden),
            filter_channels=int(ffn[0]),
            n_heads=int(hidden // rel[2]),
            n_layers=_count(weights, r"enc_p\.encoder\.attn_layers\.(\d+)\.conv_q\.weight"),
            kernel_size=int(ffn[2]),
            window_size=int((rel[1] - 1) // 2),
            inter_channels=int(weights["enc_p.proj.weight"].shape[0] // 2),
            flow_layers=_count(weights, r"flow\.flows\.(\d+)\.pre\.weight"),
            flow_wn_layers=_count(weights, r"flow\.flows\.0\.enc\.in_layers\.(\d+)\.bias"),
            flow_kernel=int(weights["flow.flows.0.enc.in_layers.0.weight"].shape[2]),
            dp_filter=int(weights["dp.pre.weight"].shape[0]),
            dp_kernel=int(weights["dp.convs.convs_sep.0.weight"].shape[2]),
            dp_flows=(max(int(i) for i in _flow_indices(weights)) + 1) // 2,
            spline_bins=(int(weights["dp.flows.3.proj.weight"].shape[0]) + 1) // 3,
            upsample_initial=int(weights["dec.conv_pre.weight"].shape[0]),
            upsample_rates=tuple(attrs[u].stride for u in ups),
            upsample_kernels=tuple(int(weights[u].shape[2]) for u in ups),
            resblock_kernels=tuple(int(weights[f"dec.resblocks.{b}.convs.0.weight"].shape[2])
                                   for b in blocks),
            resblock_dilations=tuple(
                tuple(attrs[f"dec.resblocks.{b}.convs.{c}.weight"].dilation
                      for c in range(n_block_convs)) for b in blocks),
        )
    except KeyError as exc:
        raise VoiceError(f"the ONNX file lacks the VITS weight {exc}: not a Piper voice") from exc
    return cfg


def _flow_indices(weights: dict[str, np.ndarray]) -> list[str]:
    rx = re.compile(r"dp\.flows\.(\d+)\.pre\.weight")
    found = [m.group(1) for n in weights if (m := rx.fullmatch(n))]
    if not found:
        raise VoiceError("the duration predictor has no spline flows: not a Piper VITS voice")
    return found


def check_shapes(expected: dict[str, tuple[int, ...]], weights: dict[str, np.ndarray]) -> None:
    """Raise :class:`VoiceError` naming what is missing, unexpected or of the wrong shape."""
    missing = sorted(set(expected) - set(weights))
    wrong = sorted(n for n in expected.keys() & weights.keys()
                   if _as_1d_conv(weights[n].shape) != _as_1d_conv(expected[n]))
    if missing or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if wrong:
            n = wrong[0]
            parts.append(f"{len(wrong)} of the wrong shape (e.g. {n}: "
                         f"{tuple(weights[n].shape)} != {tuple(expected[n])})")
        raise VoiceError("the voice's weights do not match its architecture: " + "; ".join(parts))


def _as_1d_conv(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A ``(out, in, 1, k)`` 2-D kernel is the ``(out, in, k)`` 1-D kernel it stores."""
    shape = tuple(shape)
    return shape[:2] + shape[3:] if len(shape) == 4 and shape[2] == 1 else shape
