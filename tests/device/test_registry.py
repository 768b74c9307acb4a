"""Provider discovery, device listing with backends, and picking a device."""

from __future__ import annotations

import pytest

import zhisuan.device as device_api
from zhisuan.device import device_kinds, find_device, list_devices, select_providers
from zhisuan.device.base import backends_reaching
from zhisuan.device.null import NullProvider
from zhisuan.device.nvidia import NvidiaProvider
from zhisuan.errors import UserError
from zhisuan.runtime import BackendStatus


def test_public_api_is_exact_and_importable() -> None:
    assert device_api.__all__ == sorted(device_api.__all__)
    for name in device_api.__all__:
        assert getattr(device_api, name) is not None


def test_kinds_are_discovered_and_null_is_opt_in() -> None:
    assert device_kinds() == ["cpu", "cuda", "null"]
    assert [p.kind for p in select_providers()] == ["cpu", "cuda"]
    assert [p.kind for p in select_providers(["null", "cpu", "null"])] == ["null", "cpu"]
    with pytest.raises(UserError, match="unknown device kind 'tpu'; choose from: cpu, cuda, null"):
        select_providers(["tpu"])


STATUSES = [
    BackendStatus("onnxruntime", True, "1.32.0", ("tensorrt", "cuda", "cpu")),
    BackendStatus("openvino", True, "2026.4", ("CPU", "GPU.0")),  # GPU.0 is an Intel GPU
    BackendStatus("torch", True, "2.13.0", ("cpu", "cuda:0", "cuda:1")),
    BackendStatus("tensorrt", False, None, (), "not installed", "pip install tensorrt"),
]


def test_backends_reaching_each_device() -> None:
    cpu = [str(b) for b in backends_reaching("cpu", 0, STATUSES)]
    assert cpu == ["onnxruntime:cpu", "openvino:CPU", "torch:cpu"]
    gpu1 = [str(b) for b in backends_reaching("cuda", 1, STATUSES)]
    assert gpu1 == ["onnxruntime:tensorrt", "onnxruntime:cuda", "torch:cuda:1"]
    assert backends_reaching("null", 0, STATUSES) == ()


def test_list_devices_with_fake_gpus_and_backends(two_gpus) -> None:  # type: ignore[no-untyped-def]
    found = list_devices(
        providers=[NvidiaProvider(nvml=two_gpus), NullProvider(count=1)], backend_statuses=STATUSES
    )
    assert [d.id for d in found.devices] == ["cuda:0", "cuda:1", "null:0"]
    assert [b.to_dict() for b in found.devices[1].backends][-1] == {
        "runtime": "torch", "version": "2.13.0", "device": "cuda:1"
    }  # fmt: skip
    assert found.reasons == {}


def test_list_devices_here_has_the_cpu_and_says_why_there_is_no_gpu() -> None:
    found = list_devices(backends=False)
    assert found.devices[0].id == "cpu:0" and found.devices[0].backends == ()
    if not any(d.kind == "cuda" for d in found.devices):
        assert found.reasons.get("cuda")


def test_find_device_by_position_id_and_name(two_gpus) -> None:  # type: ignore[no-untyped-def]
    devices = list_devices(providers=[NvidiaProvider(nvml=two_gpus)], backends=False).devices
    assert find_device("1", devices).name == "NVIDIA GeForce RTX 3090"
    assert find_device("cuda:0", devices).name.startswith("NVIDIA H100")
    assert find_device("h100", devices).id == "cuda:0"
    with pytest.raises(UserError, match="no device 5: there are 2 devices"):
        find_device("5", devices)
    with pytest.raises(UserError, match="'nvidia' matches 2 devices"):
        find_device("nvidia", devices)
    with pytest.raises(UserError, match="no device matches 'tpu'"):
        find_device("tpu", devices)
    with pytest.raises(UserError, match="no cuda device: NVML unavailable"):
        find_device("cuda:0", [], {"cuda": "NVML unavailable: no driver"})
