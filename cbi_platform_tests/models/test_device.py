"""Device detection and the precision policy of the Keras models."""

from __future__ import annotations

import dataclasses

import pytest

from cbi_platform.models.device import (
    DeviceInfo,
    PeakMemory,
    configure_keras,
    detect_device,
    peak_memory_bytes,
    precision_for,
)


def test_precision_policy_is_mixed_only_on_cuda():
    assert precision_for("cpu") == "float32"
    assert precision_for("cuda") == "mixed_float16"
    assert precision_for("metal") == "float32"
    with pytest.raises(ValueError, match="unknown device kind"):
        precision_for("tpu")


def test_detect_device_on_this_machine_is_cpu():
    pytest.importorskip("keras")
    info = detect_device()
    assert isinstance(info, DeviceInfo)
    assert info.kind == "cpu" and info.precision == "float32"
    assert info.backend == "tensorflow"
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.kind = "cuda"  # type: ignore[misc]


def test_configure_keras_sets_the_float32_policy_on_cpu():
    keras = pytest.importorskip("keras")
    info = configure_keras(threads=1)
    assert info.kind == "cpu"
    assert keras.mixed_precision.global_policy().name == "float32"
    configure_keras(threads=1)  # a second call (threads already initialised) does not raise


def test_peak_memory_reports_bytes():
    peak = peak_memory_bytes()
    assert isinstance(peak, PeakMemory)
    assert peak.rss_bytes > 10 * 2**20  # a Python process holds more than 10 MiB: not KiB
    assert peak.accelerator_bytes is None  # no GPU here
    assert peak.as_dict()["rss_bytes"] == peak.rss_bytes
