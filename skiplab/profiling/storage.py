"""Which storage a tensor lives in, on any device.

``data_ptr()`` is 0 for every tensor on the meta device (and for fake tensors), where
``skiplab.cost`` runs its models, so storages are told apart by the address of their
``StorageImpl`` instead: the same for every view of one tensor, on every device. Two live
tensors never share it unless they share memory; a freed storage's key may be reused, so
keys are compared only among tensors kept alive (parameters, tensors autograd saved).
"""

from __future__ import annotations

import torch


def storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata
