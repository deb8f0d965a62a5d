"""Read the weights of dlib's DNN models from dlib's own binary serialization.

dlib writes a network as its loss layer first, then the nested layer wrappers from the output
inwards (one version number each: 2 for a computational layer, 1 for a tag or skip layer, 3 for
the layer that wraps the input), then the input layer and finally each computational layer's
details from the input outwards. The primitive encodings are:

* integers: one header byte (low nibble: number of little-endian magnitude bytes that follow;
  bit 0x80: negative), then the bytes;
* floating-point numbers: an integer mantissa and an integer exponent (value = m * 2**e);
* strings: an integer length and the bytes; booleans: the characters ``'0'``/``'1'``;
* tensors: version 2, then num_samples, k, nr, nc and the values as little-endian float32;
* alias tensors (views into a layer's parameter tensor): version 1 and four dimensions.

Tag and skip layers carry no data, so which is which comes from the network definition the
converter knows (:mod:`regard.models.convert_dlib`); this module only returns the sequence of
layers and their parameters, from input to output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from regard.errors import ModelUnavailable

F32 = npt.NDArray[np.float32]

#: Sentinel exponents dlib uses for non-finite values.
_INF, _NINF, _NAN = 32000, 32001, 32002


class _Reader:
    def __init__(self, data: bytes, where: str) -> None:
        self.data = data
        self.pos = 0
        self.where = where

    def fail(self, what: str) -> ModelUnavailable:
        return ModelUnavailable(f"{self.where}: {what} at byte {self.pos}; the model file is corrupt")

    def integer(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("unexpected end of file")
        head = self.data[self.pos]
        size = head & 0x0F
        if size > 8:
            raise self.fail(f"bad integer header {head:#x}")
        start = self.pos + 1
        end = start + size
        if end > len(self.data):
            raise self.fail("unexpected end of file")
        value = int.from_bytes(self.data[start:end], "little")
        self.pos = end
        return -value if head & 0x80 else value

    def real(self) -> float:
        mantissa = self.integer()
        exponent = self.integer()
        if exponent == _INF:
            return float("inf")
        if exponent == _NINF:
            return float("-inf")
        if exponent == _NAN:
            return float("nan")
        return float(mantissa) * 2.0**exponent

    def string(self) -> str:
        size = self.integer()
        if size < 0 or self.pos + size > len(self.data):
            raise self.fail("bad string length")
        raw = self.data[self.pos : self.pos + size]
        self.pos += size
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail("expected a layer name") from None

    def booleans(self, count: int) -> str:
        raw = self.data[self.pos : self.pos + count]
        if len(raw) != count or any(c not in b"01" for c in raw):
            raise self.fail("expected boolean flags")
        self.pos += count
        return raw.decode("ascii")

    def tensor(self) -> F32:
        version = self.integer()
        if version != 2:
            raise self.fail(f"unknown tensor version {version}")
        dims = tuple(self.integer() for _ in range(4))
        count = int(np.prod(dims))
        end = self.pos + 4 * count
        if count < 0 or end > len(self.data):
            raise self.fail("tensor runs past the end of the file")
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos)
        self.pos = end
        return values.astype(np.float32).reshape(dims)

    def alias(self) -> tuple[int, int, int, int]:
        version = self.integer()
        if version != 1:
            raise self.fail(f"unknown alias tensor version {version}")
        n, k, nr, nc = (self.integer() for _ in range(4))
        return (n, k, nr, nc)


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer: ``kind`` is con, bn_con, affine, relu, max_pool, avg_pool, add_prev, fc or tag.

    ``tag`` stands for a dlib tag or skip layer (they are serialized alike); ``attrs`` holds the
    layer's integer settings, ``weights`` its arrays (already shaped).
    """

    kind: str
    attrs: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, F32] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DlibNet:
    """A parsed dlib network: loss, input and layers from input to output."""

    loss: str
    loss_attrs: dict[str, Any]
    input: str
    input_attrs: dict[str, Any]
    layers: list[Layer]


def _loss(r: _Reader) -> tuple[str, dict[str, Any]]:
    version = r.integer()
    if version != 1:
        raise r.fail(f"unknown loss layer version {version}")
    name = r.string()
    if name == "loss_metric_2":
        return "loss_metric", {"margin": r.real(), "distance_threshold": r.real()}
    if name == "loss_mmod_":
        opt_version = r.integer()
        if opt_version != 1:
            raise r.fail(f"unsupported mmod_options version {opt_version}")
        attrs: dict[str, Any] = {
            "detector_width": r.integer(),
            "detector_height": r.integer(),
            "loss_per_false_alarm": r.real(),
            "loss_per_missed_target": r.real(),
            "truth_match_iou_threshold": r.real(),
            "nms_iou_thresh": r.real(),
            "nms_percent_covered_thresh": r.real(),
            "ignore_iou_thresh": r.real(),
            "ignore_percent_covered_thresh": r.real(),
        }
        return "loss_mmod", attrs
    raise r.fail(f"unsupported loss layer {name!r}")


def _input(r: _Reader) -> tuple[str, dict[str, Any]]:
    name = r.string()
    if name == "input_rgb_image_sized":
        mean = (r.real(), r.real(), r.real())
        return "input_rgb_image_sized", {"mean": mean, "nr": r.integer(), "nc": r.integer()}
    if name == "input_rgb_image_pyramid":
        mean = (r.real(), r.real(), r.real())
        return "input_rgb_image_pyramid", {"mean": mean}
    raise r.fail(f"unsupported input layer {name!r}")


def _details(r: _Reader) -> Layer:
    name = r.string()
    if name == "con_4":
        params = r.tensor().reshape(-1)
        num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x = (r.integer() for _ in range(7))
        filt = r.alias()
        r.alias()  # biases
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.real()
        size = int(np.prod(filt))
        if filt[0] != num_filters or params.size != size + num_filters:
            raise r.fail("convolution parameters do not match their shape")
        return Layer(
            "con",
            {"stride": (stride_y, stride_x), "pad": (pad_y, pad_x), "kernel": (nr, nc)},
            {"weight": params[:size].reshape(filt), "bias": params[size:].copy()},
        )
    if name == "affine_":
        params = r.tensor().reshape(-1)
        gamma = r.alias()
        r.alias()
        mode = r.integer()
        n = int(np.prod(gamma))
        return Layer("affine", {"mode": mode}, {"gamma": params[:n].copy(), "beta": params[n : 2 * n].copy()})
    if name == "bn_con2":
        params = r.tensor().reshape(-1)
        gamma = r.alias()
        r.alias()
        r.tensor()  # means and inverse standard deviations of the last training batch
        r.tensor()
        running_means = r.tensor().reshape(-1)
        running_variances = r.tensor().reshape(-1)
        r.integer()  # num_updates
        r.integer()  # running_stats_window_size
        for _ in range(4):
            r.real()
        eps = r.real()
        n = int(np.prod(gamma))
        return Layer(
            "bn_con",
            {"eps": eps},
            {
                "gamma": params[:n].copy(),
                "beta": params[n : 2 * n].copy(),
                "running_mean": running_means,
                "running_var": running_variances,
            },
        )
    if name == "relu_":
        return Layer("relu")
    if name == "add_prev_":
        return Layer("add_prev")
    if name in ("max_pool_2", "avg_pool_2"):
        nr, nc, stride_y, stride_x, pad_y, pad_x = (r.integer() for _ in range(6))
        return Layer(
            name[:-2],
            {"kernel": (nr, nc), "stride": (stride_y, stride_x), "pad": (pad_y, pad_x)},
        )
    if name == "fc_2":
        num_outputs = r.integer()
        num_inputs = r.integer()
        params = r.tensor().reshape(-1)
        r.alias()
        r.alias()
        bias_mode = r.integer()  # 0: has bias, 1: no bias
        for _ in range(4):
            r.real()
        has_bias = bias_mode == 0
        rows = num_inputs + (1 if has_bias else 0)
        if params.size != rows * num_outputs:
            raise r.fail("fully connected parameters do not match their shape")
        matrix = params.reshape(rows, num_outputs)
        weights = {"weight": matrix[:num_inputs].copy()}
        if has_bias:
            weights["bias"] = matrix[num_inputs].copy()
        return Layer("fc", {"outputs": num_outputs}, weights)
    raise r.fail(f"unsupported layer {name!r}")


def _tail(r: _Reader) -> None:
    r.booleans(3)
    for _ in range(3):  # x_grad, cached_output, params_grad (empty in saved models)
        r.tensor()


def parse(data: bytes, where: str = "dlib model") -> DlibNet:
    """Parse a serialized dlib network (the bytes of a ``.dat`` file)."""
    r = _Reader(data, where)
    loss, loss_attrs = _loss(r)
    wrappers: list[int] = []
    while True:
        version = r.integer()
        if version == 3:
            break
        if version not in (1, 2):
            raise r.fail(f"unknown layer wrapper version {version}")
        wrappers.append(version)
    input_name, input_attrs = _input(r)
    layers = [_details(r)]
    _tail(r)
    r.integer()  # sample expansion factor of the input layer
    for version in reversed(wrappers):
        if version == 1:
            layers.append(Layer("tag"))
        else:
            layers.append(_details(r))
            _tail(r)
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} unexpected trailing bytes")
    return DlibNet(loss, loss_attrs, input_name, input_attrs, layers)


def load(path: Path) -> DlibNet:
    """Parse the dlib model file at ``path``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelUnavailable(f"cannot read {path}: {exc}") from exc
    return parse(data, str(path))
