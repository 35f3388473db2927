"""ONNX export of the merged model: ONNX Runtime matches PyTorch on both encoders."""

from __future__ import annotations

import json

import onnx
import onnxruntime as ort
import open_clip
import pytest
import torch
from helpers import TINY, make_tiny_model, perturb_adapters, save_weights

from training.cli import main
from training.export_onnx import PARITY_FILE, export_encoders, parity_inputs, parity_report
from training.radapter import RAdapterConfig, inject_adapters, merge_and_unload


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = inject_adapters(make_tiny_model(), RAdapterConfig(text_rank=4))
    perturb_adapters(model)
    merge_and_unload(model.eval())
    directory = tmp_path_factory.mktemp("onnx")
    return model, export_encoders(model, directory)


def test_export_encoders_dynamic_batch_graphs(exported):
    _, paths = exported
    for path, input_name in ((paths["image"], "pixel_values"), (paths["text"], "input_ids")):
        graph = onnx.load(str(path))
        onnx.checker.check_model(graph)
        assert graph.graph.input[0].name == input_name
        assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch axis
        assert max(opset.version for opset in graph.opset_import if opset.domain in ("", "ai.onnx")) >= 17


def test_parity_report_merged_model(exported):
    model, paths = exported
    report = parity_report(model, paths, open_clip.get_tokenizer(TINY))
    assert report["passed"], report
    assert sorted({row["batch_size"] for row in report["results"]}) == [1, 8, 33]


def test_text_encoder_onnx_eot_pooling(exported):
    # Captions of every length, including truncated ones, must pool at their own EOT position.
    model, paths = exported
    session = ort.InferenceSession(str(paths["text"]), providers=["CPUExecutionProvider"])
    _, tokens = parity_inputs(model, open_clip.get_tokenizer(TINY), batch_size=33)
    assert len({int(row.argmax()) for row in tokens}) > 5
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
    actual = torch.from_numpy(session.run(None, {"input_ids": tokens.numpy()})[0])
    # Float32 kernels in ONNX Runtime sum in another order than torch; 1e-5 on unit vectors.
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_cli_export_onnx_writes_parity_report(tmp_path, capsys):
    weights = save_weights(make_tiny_model(), tmp_path / "base.safetensors")
    code = main(
        ["export-onnx", "--arch", TINY, "--pretrained", str(weights), "--output-dir", str(tmp_path / "out")]
    )
    assert code == 0
    report = json.loads((tmp_path / "out" / PARITY_FILE).read_text())
    assert report["passed"] and report["providers"][0] == "CPUExecutionProvider"
    assert "parity passed" in capsys.readouterr().out


def test_export_encoders_rejects_old_opset(tmp_path):
    with pytest.raises(ValueError, match="opset 16"):
        export_encoders(make_tiny_model(), tmp_path, opset=16)


@pytest.mark.slow
def test_export_encoders_vit_b_16_random_init_parity(tmp_path):
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16").eval()
    paths = export_encoders(model, tmp_path)
    report = parity_report(model, paths, open_clip.get_tokenizer("ViT-B-16"))
    assert report["passed"], report
