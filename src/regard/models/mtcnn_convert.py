"""Convert MTCNN's P-, R- and O-nets (weights from the ``mtcnn`` package) into ONNX graphs.

The ``mtcnn`` package ships its weights as joblib + lz4 lists of numpy arrays in Keras layout
(conv kernels ``(kh, kw, in, out)``, PReLU alphas ``(1, 1, C)`` or ``(C,)``, dense kernels
``(in, out)``). Importing the package itself needs TensorFlow, so only the files are read here.

The graphs take NCHW float32 input already scaled to [-1, 1] (``(x - 127.5) / 128``). Architecture
(Zhang et al. 2016, as laid out in the ``mtcnn`` package's Keras models):

* P-net (any size >= 12): conv3x3(10) PReLU maxpool2/2(same) conv3x3(16) PReLU conv3x3(32) PReLU,
  then 1x1 heads: box regression (4) and face/non-face softmax (2).
* R-net (24x24): conv3x3(28) PReLU maxpool3/2(same) conv3x3(48) PReLU maxpool3/2(valid)
  conv2x2(64) PReLU, flatten, dense(128) PReLU, heads: box (4), softmax (2).
* O-net (48x48): conv3x3(32) PReLU maxpool3/2(same) conv3x3(64) PReLU maxpool3/2(valid)
  conv3x3(64) PReLU maxpool2/2(same) conv2x2(128) PReLU, flatten, dense(256) PReLU, heads: box (4),
  landmarks (10: five x then five y, fractions of the box), softmax (2).

The Keras models permute (H, W) before flattening, so the flatten order is (W, H, C); the graphs
reproduce it with a Transpose from NCHW to NWHC. Every output is named: ``box``, ``prob`` and (O-net)
``landmarks``. R- and O-net's ``prob`` is the two-way softmax (non-face, face); P-net's ``prob`` has
one channel, the face probability (the same number, computed as a sigmoid of the logit difference).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from regard.errors import ModelUnavailable
from regard.models.cache import cached_model
from regard.models.packaged import mtcnn_weights_dir

#: Bump when the graphs change; it is part of the cache key.
CONVERTER_VERSION = "mtcnn-onnx-3"
OPSET = 17
NETS = ("pnet", "rnet", "onet")
#: Input side of R-net and O-net.
INPUT_SIZE = {"rnet": 24, "onet": 48}


@dataclass(frozen=True)
class _Conv:
    out: int
    kernel: int


@dataclass(frozen=True)
class _Pool:
    size: int
    stride: int
    same: bool


#: Layer plan of each trunk (before the heads); PReLU follows every conv.
TRUNKS: dict[str, list[_Conv | _Pool]] = {
    "pnet": [_Conv(10, 3), _Pool(2, 2, True), _Conv(16, 3), _Conv(32, 3)],
    "rnet": [_Conv(28, 3), _Pool(3, 2, True), _Conv(48, 3), _Pool(3, 2, False), _Conv(64, 2)],
    "onet": [
        _Conv(32, 3),
        _Pool(3, 2, True),
        _Conv(64, 3),
        _Pool(3, 2, False),
        _Conv(64, 3),
        _Pool(2, 2, True),
        _Conv(128, 2),
    ],
}
#: Width of the dense layer after the flatten (R-net, O-net).
DENSE = {"rnet": 128, "onet": 256}
#: Output heads, in the order their weights are stored: (name, width, activation).
HEADS: dict[str, list[tuple[str, int, str]]] = {
    "pnet": [("box", 4, "linear"), ("prob", 2, "softmax")],
    "rnet": [("box", 4, "linear"), ("prob", 2, "softmax")],
    "onet": [("box", 4, "linear"), ("landmarks", 10, "linear"), ("prob", 2, "softmax")],
}
#: How many arrays each weight file holds.
ARRAY_COUNT = {"pnet": 13, "rnet": 16, "onet": 21}


def weight_file(net: str) -> Path:
    return mtcnn_weights_dir() / f"{net}.lz4"


def load_weights(net: str) -> list[np.ndarray]:
    """The arrays of one net, as float32, checked against the expected count."""
    if net not in NETS:
        raise ModelUnavailable(f"unknown MTCNN net {net!r}; known: {NETS}")
    arrays = joblib.load(weight_file(net))
    if not isinstance(arrays, list) or len(arrays) != ARRAY_COUNT[net]:
        raise ModelUnavailable(f"{weight_file(net)} does not hold the {ARRAY_COUNT[net]} arrays of {net}")
    return [np.asarray(a, dtype=np.float32) for a in arrays]


class _Graph:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, stem: str, value: np.ndarray) -> str:
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: Sequence[str], output: str | None = None, **attrs: Any) -> str:
        out = output or self.name(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], **attrs))
        return out


def _check(shape: tuple[int, ...], expected: tuple[int, ...], what: str) -> None:
    if shape != expected:
        raise ModelUnavailable(f"MTCNN weights: {what} has shape {shape}, expected {expected}")


def _prelu(g: _Graph, net: str, x: str, alpha: np.ndarray) -> str:
    """PReLU(x) with per-channel slopes ``alpha``.

    P-net keeps onnxruntime's PRelu (the fastest form on its large feature maps). R-net and O-net
    use the equivalent ``alpha * x + (1 - alpha) * relu(x)``: on their batches of small crops
    onnxruntime runs that 15-50% faster than its PRelu kernel (measured on two threads:
    R-net, 85 crops, 9.8 -> 8.4 ms; O-net 2.3 -> 1.2 ms), with differences below 1e-6.
    """
    if net == "pnet":
        return g.node("PRelu", [x, g.const("alpha", alpha)])
    linear = g.node("Mul", [x, g.const("alpha", alpha)])
    rest = g.node("Mul", [g.node("Relu", [x]), g.const("one_minus_alpha", 1.0 - alpha)])
    return g.node("Add", [linear, rest])


def build_graph(net: str, arrays: Sequence[np.ndarray]) -> onnx.ModelProto:
    """The ONNX model of ``net`` from its Keras-layout arrays."""
    g = _Graph()
    it = iter(arrays)
    x = "input"
    channels = 3
    for layer in TRUNKS[net]:
        if isinstance(layer, _Conv):
            kernel, bias, alpha = next(it), next(it), next(it)
            _check(kernel.shape, (layer.kernel, layer.kernel, channels, layer.out), "conv kernel")
            _check(bias.shape, (layer.out,), "conv bias")
            _check(tuple(alpha.reshape(-1).shape), (layer.out,), "PReLU alpha")
            w = g.const("W", kernel.transpose(3, 2, 0, 1))  # HWIO -> OIHW
            b = g.const("B", bias)
            x = g.node("Conv", [x, w, b], kernel_shape=[layer.kernel, layer.kernel], strides=[1, 1])
            x = _prelu(g, net, x, alpha.reshape(layer.out, 1, 1))
            channels = layer.out
        else:
            pad = "SAME_UPPER" if layer.same else "VALID"
            x = g.node(
                "MaxPool",
                [x],
                kernel_shape=[layer.size, layer.size],
                strides=[layer.stride, layer.stride],
                auto_pad=pad,
            )
    outputs: list[onnx.ValueInfoProto] = []
    if net == "pnet":
        for head, width, activation in HEADS[net]:
            kernel, bias = next(it), next(it)
            _check(kernel.shape, (1, 1, channels, width), f"{head} head kernel")
            if activation == "softmax":
                # A two-way softmax's second output is sigmoid(z1 - z0): one 1x1 conv whose
                # activation onnxruntime fuses, instead of a conv, a softmax and a slice.
                kernel = kernel[..., 1:2] - kernel[..., 0:1]
                bias = bias[1:2] - bias[0:1]
                width = 1
            w = g.const("W", kernel.transpose(3, 2, 0, 1))
            y = g.node("Conv", [x, w, g.const("B", bias)], None if activation == "softmax" else head)
            if activation == "softmax":
                g.node("Sigmoid", [y], head)
            outputs.append(helper.make_tensor_value_info(head, TensorProto.FLOAT, ["N", width, "h", "w"]))
        in_shape: list[str | int] = ["N", 3, "H", "W"]
    else:
        # Keras: Permute((2, 1, 3)) on NHWC then Flatten -> order (W, H, C).
        x = g.node("Transpose", [x], perm=[0, 3, 2, 1])
        x = g.node("Flatten", [x], axis=1)
        kernel, bias, alpha = next(it), next(it), next(it)
        _check(kernel.shape[1:], (DENSE[net],), "dense kernel")
        x = g.node("Gemm", [x, g.const("W", kernel), g.const("B", bias)])
        x = _prelu(g, net, x, alpha.reshape(-1))
        for head, width, activation in HEADS[net]:
            kernel, bias = next(it), next(it)
            _check(kernel.shape, (DENSE[net], width), f"{head} head kernel")
            args = [x, g.const("W", kernel), g.const("B", bias)]
            y = g.node("Gemm", args, None if activation == "softmax" else head)
            if activation == "softmax":
                g.node("Softmax", [y], head, axis=1)
            outputs.append(helper.make_tensor_value_info(head, TensorProto.FLOAT, ["N", width]))
        side = INPUT_SIZE[net]
        in_shape = ["N", 3, side, side]
    leftover = sum(1 for _ in it)
    if leftover:
        raise ModelUnavailable(f"MTCNN weights for {net}: {leftover} arrays left unused")
    graph = helper.make_graph(
        g.nodes,
        f"mtcnn_{net}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
        outputs,
        g.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="regard.mtcnn_convert"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_bytes(net: str) -> bytes:
    """The serialized ONNX model of ``net``."""
    data: bytes = build_graph(net, load_weights(net)).SerializeToString()
    return data


def mtcnn_onnx_paths(cache_dir: Path | None = None) -> dict[str, Path]:
    """Paths of the converted P/R/O nets, building them on first use (cached by weight hash)."""
    return {
        net: cached_model(
            f"mtcnn-{net}",
            [weight_file(net)],
            lambda net=net: build_bytes(net),  # type: ignore[misc]
            version=CONVERTER_VERSION,
            cache_dir=cache_dir,
        )
        for net in NETS
    }
