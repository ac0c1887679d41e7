"""Stand-ins and helpers shared by the tests."""
import hashlib
from pathlib import Path

import torch


class TinyBackbone(torch.nn.Module):
    """A linear 'backbone' (4 -> 8) for testing heads and losses without CLIP."""

    embed_dim = 8

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 8)

    def encode_image(self, x):
        return self.proj(x)

    def encode_text(self, x):
        return self.proj(x)


def check_codes_and_gradients(model, batch: dict, outputs: dict, bits: int) -> None:
    """Both towers give +-1 codes of ``bits``; the loss reaches every trainable parameter; eval is deterministic."""
    for codes in (model.binarize(model.encode_image(batch["image"])), model.binarize(model.encode_text(batch["text"]))):
        assert codes.shape == (len(batch["image"]), bits) and set(codes.unique().tolist()) <= {-1.0, 1.0}
    model.loss(outputs, batch)["total"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    assert torch.equal(model.encode_image(batch["image"]), model.encode_image(batch["image"]))


def tiny_clip_batch(size: int = 4, num_classes: int = 24) -> dict:
    """Random images, token ids and multi-hot labels shaped for the tiny CLIP (32x32 images, 32 tokens)."""
    return {"image": torch.randn(size, 3, 32, 32), "text": torch.randint(1, 400, (size, 32)),
            "label": (torch.rand(size, num_classes) < 0.3).float()}


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (the run's lock file aside): what "nothing was lost" compares."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}
