"""Build ONNX graphs of dlib's ResNet descriptor and MMOD face detector from their packaged weights.

The networks are the ones defined in dlib's examples ``dnn_face_recognition_ex.cpp`` (a 29-layer
ResNet ending in a 128-d fully connected layer) and ``dnn_mmod_face_detection_ex.cpp`` (a
downsampling stack of strided 5x5 convolutions, three 5x5 layers and a 9x9 scoring filter).
Batch normalisation (``bn_con``) and its inference form ``affine`` are folded into the preceding
convolution. The ResNet graph takes ``uint8`` RGB chips (``N x 150 x 150 x 3``) and does dlib's
input normalisation itself, ``(pixel - channel_mean) / 256``; the MMOD graph takes the already
normalised tiled pyramid.

Both graphs are built from the files in ``face_recognition_models`` and cached by
:func:`regard.models.cache.cached_model`; :func:`resnet_onnx_path` and :func:`mmod_onnx_path`
return the cached files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from regard.errors import ModelUnavailable
from regard.models.cache import cached_model
from regard.models.dlib_dat import F32, DlibNet, Layer, load
from regard.models.packaged import dlib_model_path

#: Bump when the graphs change: a new version builds new cache entries.
CONVERTER_VERSION = "dlib-onnx-2"
OPSET = 17
IR_VERSION = 8

RESNET_ONNX = "dlib_resnet_v1"
MMOD_ONNX = "dlib_mmod_face"


@dataclass
class _Value:
    name: str
    shape: tuple[int, ...]  # (C, H, W) per sample; H and W are -1 when dynamic


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def fresh(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, hint: str, array: np.ndarray) -> str:
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], hint: str, *, output: str | None = None, **attrs: Any) -> str:
        out = output or self.fresh(hint)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def _out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    if size < 0:
        return -1
    return 1 + (size + 2 * pad - kernel) // stride


def _preprocess(g: _Graph, pixels: str, mean: tuple[float, float, float]) -> str:
    x = g.node("Cast", [pixels], "float", to=TensorProto.FLOAT)
    x = g.node("Transpose", [x], "nchw", perm=[0, 3, 1, 2])
    m = g.const("mean", np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1))
    x = g.node("Sub", [x, m], "centred")
    scale = g.const("scale", np.asarray(1.0 / 256.0, dtype=np.float32))
    return g.node("Mul", [x, scale], "input")


def _fold(layer: Layer, scale: F32 | None, shift: F32 | None) -> tuple[F32, F32]:
    weight = layer.weights["weight"].astype(np.float32)
    bias = layer.weights["bias"].astype(np.float32)
    if scale is None or shift is None:
        return weight, bias
    w = (weight * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
    b = (bias * scale + shift).astype(np.float32)
    return w, b


def _norm_params(layer: Layer) -> tuple[F32, F32]:
    """Per-channel (scale, shift) of an affine or bn_con layer at inference time."""
    if layer.kind == "affine":
        return layer.weights["gamma"], layer.weights["beta"]
    gamma = layer.weights["gamma"].astype(np.float64)
    beta = layer.weights["beta"].astype(np.float64)
    inv = 1.0 / np.sqrt(layer.weights["running_var"].astype(np.float64) + float(layer.attrs["eps"]))
    scale = gamma * inv
    shift = beta - scale * layer.weights["running_mean"].astype(np.float64)
    return scale.astype(np.float32), shift.astype(np.float32)


def _conv(g: _Graph, x: _Value, layer: Layer, norm: Layer | None) -> _Value:
    scale, shift = _norm_params(norm) if norm is not None else (None, None)
    weight, bias = _fold(layer, scale, shift)
    (kh, kw), (sy, sx), (py, px) = layer.attrs["kernel"], layer.attrs["stride"], layer.attrs["pad"]
    if weight.shape[1] != x.shape[0]:
        raise ModelUnavailable(f"convolution expects {weight.shape[1]} channels, gets {x.shape[0]}")
    out = g.node(
        "Conv",
        [x.name, g.const("w", weight), g.const("b", bias)],
        "conv",
        kernel_shape=[kh, kw],
        strides=[sy, sx],
        pads=[py, px, py, px],
    )
    h = _out_size(x.shape[1], kh, sy, py)
    w = _out_size(x.shape[2], kw, sx, px)
    return _Value(out, (weight.shape[0], h, w))


def _pool(g: _Graph, x: _Value, layer: Layer) -> _Value:
    (kh, kw), (sy, sx), (py, px) = layer.attrs["kernel"], layer.attrs["stride"], layer.attrs["pad"]
    if kh == 0 and kw == 0:
        op = "GlobalAveragePool" if layer.kind == "avg_pool" else "GlobalMaxPool"
        return _Value(g.node(op, [x.name], "gpool"), (x.shape[0], 1, 1))
    if (py or px) and layer.kind == "avg_pool":
        raise ModelUnavailable("padded average pooling is not supported")
    op = "AveragePool" if layer.kind == "avg_pool" else "MaxPool"
    out = g.node(op, [x.name], "pool", kernel_shape=[kh, kw], strides=[sy, sx], pads=[py, px, py, px])
    return _Value(out, (x.shape[0], _out_size(x.shape[1], kh, sy, py), _out_size(x.shape[2], kw, sx, px)))


def _pad_to(g: _Graph, x: _Value, shape: tuple[int, ...]) -> str:
    """Zero-pad ``x`` at the end of each axis to ``shape`` (dlib adds tensors of unequal size so)."""
    if x.shape == shape:
        return x.name
    extra = [0, *(t - s for s, t in zip(x.shape, shape, strict=True))]
    pads = g.const("pads", np.asarray([0, 0, 0, 0, *extra], dtype=np.int64))
    return g.node("Pad", [x.name, pads], "padded", mode="constant")


def _add_prev(g: _Graph, x: _Value, tagged: _Value) -> _Value:
    if (-1 in x.shape or -1 in tagged.shape) and x.shape != tagged.shape:
        raise ModelUnavailable("add_prev of unequal dynamic shapes is not supported")
    shape = tuple(max(a, b) for a, b in zip(x.shape, tagged.shape, strict=True))
    out = g.node("Add", [_pad_to(g, x, shape), _pad_to(g, tagged, shape)], "sum")
    return _Value(out, shape)


def _body(g: _Graph, net: DlibNet, x: _Value) -> _Value:
    """Emit every layer of ``net``; tags follow the ResNet template of dnn_face_recognition_ex.

    A single tag marks a block's input (``tag1``); two tags in a row are ``tag2`` (the block's
    output) followed by ``skip1`` (back to the block's input); ``add_prev`` adds ``tag2`` when one
    is pending, else ``tag1``.
    """
    layers = net.layers
    tag1: _Value | None = None
    tag2: _Value | None = None
    i = 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if layer.kind == "con":
            norm = nxt if nxt is not None and nxt.kind in ("affine", "bn_con") else None
            x = _conv(g, x, layer, norm)
            i += 2 if norm is not None else 1
            continue
        if layer.kind in ("affine", "bn_con"):
            scale, shift = _norm_params(layer)
            s = g.const("scale", scale.reshape(1, -1, 1, 1))
            t = g.const("shift", shift.reshape(1, -1, 1, 1))
            x = _Value(g.node("Add", [g.node("Mul", [x.name, s], "scaled"), t], "affine"), x.shape)
        elif layer.kind == "relu":
            x = _Value(g.node("Relu", [x.name], "relu"), x.shape)
        elif layer.kind in ("max_pool", "avg_pool"):
            x = _pool(g, x, layer)
        elif layer.kind == "tag":
            if nxt is not None and nxt.kind == "tag":
                if tag1 is None:
                    raise ModelUnavailable("skip layer without a tagged input")
                tag2, x = x, tag1
                i += 2
                continue
            tag1 = x
        elif layer.kind == "add_prev":
            other = tag2 if tag2 is not None else tag1
            if other is None:
                raise ModelUnavailable("add_prev without a tagged layer")
            x = _add_prev(g, x, other)
            tag2 = None
        elif layer.kind == "fc":
            flat = g.node("Flatten", [x.name], "flat", axis=1)
            out = g.node("MatMul", [flat, g.const("fc", layer.weights["weight"])], "fc")
            if "bias" in layer.weights:
                out = g.node("Add", [out, g.const("fcb", layer.weights["bias"])], "fcb")
            x = _Value(out, (int(layer.attrs["outputs"]),))
        else:
            raise ModelUnavailable(f"cannot convert dlib layer {layer.kind!r}")
        i += 1
    return x


def _model(
    g: _Graph, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto], doc: str
) -> bytes:
    graph = helper.make_graph(g.nodes, "regard", inputs, outputs, initializer=g.inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="regard",
        producer_version=CONVERTER_VERSION,
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def build_resnet(source: Path | None = None) -> bytes:
    """ONNX bytes of dlib's ResNet: ``chips`` uint8 ``N x 150 x 150 x 3`` -> ``descriptors`` ``N x 128``."""
    path = source or dlib_model_path("resnet")
    net = load(path)
    if net.loss != "loss_metric" or net.input != "input_rgb_image_sized":
        raise ModelUnavailable(f"{path} is not dlib's metric-learning ResNet")
    size_r, size_c = int(net.input_attrs["nr"]), int(net.input_attrs["nc"])
    g = _Graph()
    x = _Value(_preprocess(g, "chips", net.input_attrs["mean"]), (3, size_r, size_c))
    out = _body(g, net, x)
    g.node("Identity", [out.name], "out", output="descriptors")
    inputs = [helper.make_tensor_value_info("chips", TensorProto.UINT8, ["N", size_r, size_c, 3])]
    outputs = [helper.make_tensor_value_info("descriptors", TensorProto.FLOAT, ["N", out.shape[0]])]
    return _model(g, inputs, outputs, f"dlib ResNet face descriptor converted from {path.name}")


def build_mmod(source: Path | None = None) -> bytes:
    """ONNX bytes of dlib's MMOD CNN: ``tensor`` float ``N x 3 x H x W`` -> ``scores`` ``N x 1 x h x w``.

    The input is the normalised tiled image pyramid dlib's ``input_rgb_image_pyramid`` builds
    (see :mod:`regard.face.detect.mmod_onnx`), so normalisation happens before the graph.
    """
    path = source or dlib_model_path("mmod")
    net = load(path)
    if net.loss != "loss_mmod" or net.input != "input_rgb_image_pyramid":
        raise ModelUnavailable(f"{path} is not dlib's MMOD detector")
    g = _Graph()
    out = _body(g, net, _Value("tensor", (3, -1, -1)))
    g.node("Identity", [out.name], "out", output="scores")
    inputs = [helper.make_tensor_value_info("tensor", TensorProto.FLOAT, ["N", 3, "H", "W"])]
    outputs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", out.shape[0], "h", "w"])]
    return _model(g, inputs, outputs, f"dlib MMOD face detector converted from {path.name}")


def resnet_onnx_path(cache_dir: Path | None = None) -> Path:
    """The cached ONNX ResNet (built on first use)."""
    src = dlib_model_path("resnet")
    return cached_model(
        RESNET_ONNX, [src], lambda: build_resnet(src), version=CONVERTER_VERSION, cache_dir=cache_dir
    )


def mmod_onnx_path(cache_dir: Path | None = None) -> Path:
    """The cached ONNX MMOD detector (built on first use)."""
    src = dlib_model_path("mmod")
    return cached_model(
        MMOD_ONNX, [src], lambda: build_mmod(src), version=CONVERTER_VERSION, cache_dir=cache_dir
    )
