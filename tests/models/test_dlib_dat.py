"""dlib's model files parse completely; damaged ones fail with ModelUnavailable."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from regard.errors import InvalidParameter, ModelUnavailable
from regard.models import dlib_model_path
from regard.models.dlib_dat import load, parse
from regard.models.session import providers_for


def test_resnet_layers() -> None:
    net = load(dlib_model_path("resnet"))
    assert net.loss == "loss_metric"
    assert net.input == "input_rgb_image_sized"
    assert (net.input_attrs["nr"], net.input_attrs["nc"]) == (150, 150)
    kinds = Counter(layer.kind for layer in net.layers)
    assert kinds["con"] == 29 and kinds["affine"] == 29 and kinds["add_prev"] == 14 and kinds["fc"] == 1
    first = net.layers[0]
    assert first.weights["weight"].shape == (32, 3, 7, 7)
    assert first.attrs["stride"] == (2, 2)
    fc = net.layers[-1]
    assert fc.weights["weight"].shape == (256, 128) and "bias" not in fc.weights


def test_mmod_layers() -> None:
    net = load(dlib_model_path("mmod"))
    assert net.loss == "loss_mmod"
    assert (net.loss_attrs["detector_width"], net.loss_attrs["detector_height"]) == (80, 80)
    assert 0.3 < net.loss_attrs["nms_iou_thresh"] < 0.4
    kinds = Counter(layer.kind for layer in net.layers)
    assert kinds == {"con": 7, "bn_con": 6, "relu": 6}
    assert net.layers[-1].weights["weight"].shape == (1, 45, 9, 9)


@pytest.mark.parametrize("cut", [10, 1000, -7])
def test_truncated_file_is_rejected(cut: int) -> None:
    data = dlib_model_path("mmod").read_bytes()
    with pytest.raises(ModelUnavailable):
        parse(data[:cut])


def test_trailing_garbage_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dat"
    bad.write_bytes(dlib_model_path("mmod").read_bytes() + b"\x01\x00")
    with pytest.raises(ModelUnavailable):
        load(bad)


def test_provider_choice() -> None:
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    assert providers_for("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(InvalidParameter):
        providers_for("tpu")
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(ModelUnavailable):
            providers_for("cuda")
