"""Host tensors to a device without making the host wait for it."""
import torch


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`tensor` (on the host) on `device`. To a GPU from pinned memory with non_blocking:
    the copy queues behind the stream's work instead of waiting for it (a plain `.to()`
    from pageable memory synchronizes), and overlaps the host's next work. torch's pinned
    memory allocator keeps the source until the copy is done."""
    if torch.device(device).type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
