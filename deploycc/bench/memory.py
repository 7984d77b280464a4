"""Peak memory over one measured span: the process RSS high-water mark on CPU, PyTorch's allocator on CUDA."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

MEMORY_NOTE = ("peak_mem_mb: growth above the memory in use just before each batch size (model and input pool "
               "excluded) - on cpu the process peak RSS (VmHWM, reset per batch size; ru_maxrss where it cannot "
               "be reset), on cuda torch.cuda.max_memory_allocated (PyTorch's allocator only: memory that ONNX "
               "Runtime or TensorRT allocate themselves is not counted)")


def proc_status_kib(key: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def ru_maxrss_kib() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux


class MemoryProbe:
    """Peak memory growth over one measured span: CPU RSS, or PyTorch's CUDA allocator."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.device = device
        self.method = ""
        self.baseline = 0
        self._resettable = False

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            return
        self._resettable = reset_peak_rss() and proc_status_kib("VmHWM") is not None
        rss = proc_status_kib("VmRSS")
        if self._resettable and rss is not None:
            self.baseline, self.method = rss * 1024, "VmHWM"
        else:  # a never-reset high-water mark: growth shows only when this span sets a new peak
            self.baseline, self.method = ru_maxrss_kib() * 1024, "ru_maxrss"

    def stop(self) -> tuple[float, float]:
        """(growth over the baseline, absolute peak), both in MB."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._resettable:
            peak = (proc_status_kib("VmHWM") or 0) * 1024
        else:
            peak = ru_maxrss_kib() * 1024
        return max(0, peak - self.baseline) / 1e6, peak / 1e6
