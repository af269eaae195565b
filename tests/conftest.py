"""Ray must stay on loopback here: it reads this once, at its first import, in every process.
Without a GPU, Triton kernels run in Triton's interpreter (read when a kernel is defined)."""
import os

import torch

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
