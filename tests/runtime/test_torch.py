"""PyTorch backend: the reference. In-memory modules only, precision and threads recorded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zhisuan.errors import BackendUnavailableError, UserError
from zhisuan.runtime import get_backend, load_runtime
from zhisuan.runtime.base import TorchModel


class _ThreadProbe(torch.nn.Module):
    """Returns the intra-op thread count torch had while running forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((1,), float(torch.get_num_threads())) + 0 * x.sum()


def test_runs_a_plain_module_with_names_from_extra() -> None:
    module = torch.nn.Linear(4, 2)
    rt = load_runtime(module, "torch", input_names=["x"], output_names=["y"])
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    got = rt.run({"x": x})
    assert list(got) == ["y"]
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got["y"], want, rtol=1e-6)
    assert rt.info.precision == "float32"
    assert rt.info.provider == "torch-cpu"
    with pytest.raises(UserError, match="needs input_names"):
        load_runtime(module, "torch")


def test_module_is_put_in_eval_mode_and_run_without_grad() -> None:
    dropout = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(p=0.9))
    dropout.train()
    rt = load_runtime(dropout, "torch", input_names=["x"], output_names=["y"])
    x = np.ones((64, 4), np.float32)
    a, b = rt.run({"x": x})["y"], rt.run({"x": x})["y"]
    np.testing.assert_array_equal(a, b)  # dropout off: eval() was applied
    assert not rt.module.training


def test_threads_apply_during_run_and_are_restored() -> None:
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    model = TorchModel(_ThreadProbe(), ("x",), ("threads",))
    rt = load_runtime(model, "torch", intra_op_threads=wanted)
    assert rt.info.intra_op_threads == wanted
    seen = rt.run({"x": np.zeros(3, np.float32)})["threads"]
    assert seen[0] == wanted
    assert torch.get_num_threads() == before  # process-wide setting restored


def test_inter_op_threads_are_read_back() -> None:
    current = torch.get_num_interop_threads()
    rt = load_runtime(torch.nn.Identity(), "torch", inter_op_threads=current, input_names=["x"], output_names=["y"])
    assert rt.info.inter_op_threads == current


def test_bf16_runs_a_cast_copy_and_records_it(mlp) -> None:
    original_dtype = mlp.torch_model.module.w.dtype
    rt = load_runtime(mlp.torch_model, "torch", precision="bf16")
    assert rt.info.precision == "bfloat16"
    assert rt.module.w.dtype == torch.bfloat16
    assert mlp.torch_model.module.w.dtype == original_dtype == torch.float32  # caller's module untouched
    got = rt.run(mlp.feeds)["y"]
    assert got.dtype == np.float32  # numpy has no bfloat16
    want = mlp.reference(mlp.feeds)["y"]
    assert 0 < np.abs(got - want).max() < 0.1  # bf16 really ran: close, but not exact


def test_int8_and_unknown_devices_are_user_errors(mlp) -> None:
    with pytest.raises(UserError, match="fp32, bf16 or fp16"):
        load_runtime(mlp.torch_model, "torch", precision="int8")
    with pytest.raises(UserError, match="no device 'tpu'"):
        load_runtime(mlp.torch_model, "torch", device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_cuda_without_a_gpu_is_backend_unavailable(mlp) -> None:
    with pytest.raises(BackendUnavailableError, match=r"torch.cuda.is_available\(\) is False"):
        load_runtime(mlp.torch_model, "torch", device="cuda")
    assert get_backend("torch").status().devices == ("cpu",)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_cuda_matches_cpu(mlp) -> None:
    rt = load_runtime(mlp.torch_model, "torch", device="cuda")
    assert rt.info.device == "cuda:0"
    np.testing.assert_allclose(rt.run(mlp.feeds)["y"], mlp.reference(mlp.feeds)["y"], rtol=1e-4, atol=1e-4)


def test_never_loads_model_files(tmp_path, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("a model file was deserialized")

    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(torch.export, "load", boom)
    for name in ("model.pt2", "model.pt", "model.pth"):
        path = tmp_path / name
        path.write_bytes(b"PK\x03\x04 pretend archive")
        with pytest.raises(UserError, match="unpickling a model file can run any code") as info:
            load_runtime(path, "torch")
        assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="never a file"):
        load_runtime(str(tmp_path / "missing.pt2"), "torch")


def test_wrong_inputs_outputs_and_return_values(mlp) -> None:
    rt = load_runtime(mlp.torch_model, "torch")
    with pytest.raises(UserError, match=r"missing \['x'\]; unknown \['input'\]"):
        rt.run({"input": np.zeros((1, 4), np.float32)})
    with pytest.raises(UserError, match="'x' is float64"):
        rt.run({"x": np.zeros((1, 4))})
    with pytest.raises(UserError, match=r"unknown outputs \['z'\]"):
        rt.run(mlp.feeds, output_names=["z"])
    wrong_count = load_runtime(torch.nn.Identity(), "torch", input_names=["x"], output_names=["a", "b"])
    with pytest.raises(UserError, match=r"returned 1 output\(s\) but output_names lists 2"):
        wrong_count.run({"x": np.zeros(2, np.float32)})
    no_specs = load_runtime(torch.nn.Linear(4, 2), "torch", input_names=["x"], output_names=["y"])
    with pytest.raises(UserError, match="torch failed to run the model: mat1 and mat2 shapes cannot be multiplied"):
        no_specs.run({"x": np.zeros((2, 5), np.float32)})  # no specs: the module itself refuses


def test_not_a_module_is_refused() -> None:
    with pytest.raises(UserError, match=r"runs a TorchModel or torch\.nn\.Module, not dict"):
        load_runtime({"weights": 1}, "torch")
