"""``regard models`` lists every model with hash and cache state; ``prepare`` builds the ONNX files."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from regard.cli.main import cli
from regard.models import dlib_model_path, file_sha256
from regard.models.catalog import catalog


def test_models_list_and_prepare(tmp_path: Path) -> None:
    runner = CliRunner()
    before = runner.invoke(cli, ["models", "--json", "--cache-dir", str(tmp_path)])
    assert before.exit_code == 0, before.output
    rows = {r["name"]: r for r in json.loads(before.output)}
    assert {"dlib-resnet", "dlib-mmod", "dlib-shape5", "dlib-shape68"} <= set(rows)
    assert rows["dlib-resnet"]["sha256"] == file_sha256(dlib_model_path("resnet"))
    assert rows["dlib-resnet"]["state"] == "missing"
    assert rows["dlib-shape68"]["state"] == "n/a"
    assert "CC0" in rows["dlib-mmod"]["licence"]
    if "mtcnn-pnet" in rows:
        assert "MIT" in rows["mtcnn-pnet"]["licence"]

    prepared = runner.invoke(cli, ["models", "prepare", "--cache-dir", str(tmp_path)])
    assert prepared.exit_code == 0, prepared.output
    assert "dlib-resnet:" in prepared.output
    states = {m.name: m.onnx_state for m in catalog(tmp_path)}
    assert states["dlib-resnet"] == states["dlib-mmod"] == "valid"

    # A corrupted converted file shows up as such, and prepare rebuilds it.
    resnet = next(m for m in catalog(tmp_path) if m.name == "dlib-resnet")
    assert resnet.onnx_path is not None
    resnet.onnx_path.write_bytes(b"truncated")
    assert {m.name: m.onnx_state for m in catalog(tmp_path)}["dlib-resnet"] == "corrupt"
    text = runner.invoke(cli, ["models", "--cache-dir", str(tmp_path)])
    assert "corrupt" in text.output
    runner.invoke(cli, ["models", "prepare", "--cache-dir", str(tmp_path)])
    assert {m.name: m.onnx_state for m in catalog(tmp_path)}["dlib-resnet"] == "valid"
