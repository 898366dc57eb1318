"""Which accelerator the Keras models run on, at which precision, and how much memory they took.

Detection goes through the active Keras backend (`keras.backend.backend()`): TensorFlow lists
its GPUs (a GPU on macOS arm64 is the Metal plugin), torch asks CUDA then MPS, JAX reads the
platform of its first device. Every backend is imported inside the functions, so importing this
module costs nothing.

Precision policy (`precision_for`): mixed_float16 only on CUDA. On CPU mixed_float16 made the
recurrent layers about 2x slower when measured; on Metal it is not reliably faster. Whatever the
policy, the networks' output layer is float32.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
from dataclasses import dataclass

KINDS = ("cuda", "metal", "cpu")


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # "cuda" | "metal" | "cpu"
    name: str  # e.g. "/physical_device:GPU:0", "cuda:0", "cpu"
    backend: str  # Keras backend: "tensorflow" | "jax" | "torch"
    precision: str  # Keras global dtype policy: "mixed_float16" | "float32"


@dataclass(frozen=True)
class PeakMemory:
    """Peak memory of this process so far.

    rss_bytes: peak resident set size (resource.getrusage; converted from KiB on Linux).
    accelerator_bytes: peak bytes TensorFlow allocated on GPU:0 (CUDA with the TensorFlow
    backend only), else None.
    """

    rss_bytes: int
    accelerator_bytes: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return {"rss_bytes": self.rss_bytes, "accelerator_bytes": self.accelerator_bytes}


def precision_for(kind: str) -> str:
    """The Keras dtype policy for a device kind: mixed_float16 on CUDA, float32 elsewhere."""
    if kind not in KINDS:
        raise ValueError(f"unknown device kind {kind!r}; known {list(KINDS)}")
    return "mixed_float16" if kind == "cuda" else "float32"


def _is_apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


def _detect(backend: str) -> tuple[str, str]:
    if backend == "tensorflow":
        import tensorflow as tf  # heavy: delayed

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return ("metal" if _is_apple_silicon() else "cuda"), gpus[0].name
        return "cpu", "cpu"
    if backend == "torch":
        import torch  # heavy: delayed

        if torch.cuda.is_available():
            return "cuda", f"cuda:0 ({torch.cuda.get_device_name(0)})"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "metal", "mps"
        return "cpu", "cpu"
    if backend == "jax":
        import jax  # heavy: delayed

        device = jax.devices()[0]
        platform_name = str(device.platform).lower()
        if platform_name in ("gpu", "cuda"):
            return "cuda", str(device)
        if platform_name == "metal":
            return "metal", str(device)
        return "cpu", str(device)
    return "cpu", "cpu"


def detect_device() -> DeviceInfo:
    """The device the active Keras backend computes on, and the precision policy for it."""
    import keras  # heavy: delayed

    backend = keras.backend.backend()
    kind, name = _detect(backend)
    return DeviceInfo(kind=kind, name=name, backend=backend, precision=precision_for(kind))


def configure_keras(threads: int | None = None, precision: str | None = None) -> DeviceInfo:
    """Set TensorFlow's thread pools (when not yet initialised) and the global dtype policy.

    `threads` and `precision` default to the environment the `gpu` resource gives training
    processes (CBI_NEURAL_THREADS, default 1; CBI_NEURAL_PRECISION: auto | float32 |
    mixed_float16, default auto = `precision_for` the detected device). TensorFlow refuses to
    change its thread pools once an op has run (RuntimeError); that is swallowed: whatever was
    set first stays. Returns the detected device with the precision in force.
    """
    import keras  # heavy: delayed

    threads = int(os.environ.get("CBI_NEURAL_THREADS", "1")) if threads is None else threads
    wanted = precision or os.environ.get("CBI_NEURAL_PRECISION", "auto")
    if wanted not in ("auto", "float32", "mixed_float16"):
        raise ValueError(f"precision must be auto, float32 or mixed_float16, not {wanted!r}")
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # heavy: delayed

        for setter in (
            tf.config.threading.set_intra_op_parallelism_threads,
            tf.config.threading.set_inter_op_parallelism_threads,
        ):
            try:
                if threads:
                    setter(int(threads))
            except RuntimeError:
                pass  # already initialised
    info = detect_device()
    if wanted != "auto":
        info = DeviceInfo(kind=info.kind, name=info.name, backend=info.backend, precision=wanted)
    keras.mixed_precision.set_global_policy(info.precision)
    return info


def peak_memory_bytes() -> PeakMemory:
    """Peak RSS of the process (bytes) and, on CUDA with TensorFlow, GPU:0's peak allocation."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss = int(peak) if sys.platform == "darwin" else int(peak) * 1024  # Linux reports KiB
    accelerator = None
    if "tensorflow" in sys.modules:
        try:
            import tensorflow as tf  # heavy: delayed

            if tf.config.list_physical_devices("GPU") and not _is_apple_silicon():
                accelerator = int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
        except Exception:  # noqa: BLE001 - memory info is optional and backend-dependent
            accelerator = None
    return PeakMemory(rss_bytes=rss, accelerator_bytes=accelerator)
