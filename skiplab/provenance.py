"""Where and with what a result was produced: versions and hardware, stored with every run."""

from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    import numpy
    import torch

    from .version import __version__

    return {"skiplab": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__}


@lru_cache(maxsize=1)
def hardware() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"platform": f"{platform.system()} {platform.release()}", "machine": platform.machine(), "cpu": cpu,
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "executable": sys.executable}
