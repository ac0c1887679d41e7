"""The frozen-backbone fast path: encode every image and caption once, then train only the hash heads.

With ``model.freeze_backbone: true`` and ``run.feature_cache: true`` the runner swaps each split for a
:class:`FeatureDataset` of what the model's ``image_features`` / ``text_features`` return (pooled
embeddings, or token sequences for methods that hash tokens). Epochs then cost a pass through the heads.
The cache file is keyed by the backbone weights and options, the image resolution and transform, the
tokenizer, and the split's rows and captions, so any change builds a new one. Every caption of a row is
cached, so the per-epoch caption draw of training is kept; image augmentation is fixed to one view.
"""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dataset.cross_modal import CrossModalDataset
from dataset.tokenizers import text_inputs
from utils.checkpoint import read, save_atomic
from utils.logging import get_logger


class FeatureDataset(Dataset):
    """A split of cached backbone features that yields ``image_features``, ``text_features``, label, index."""

    def __init__(self, source: CrossModalDataset, image: torch.Tensor, text: torch.Tensor, offsets: np.ndarray):
        self.source, self.image, self.text, self.offsets = source, image, text, offsets

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        self.source.set_epoch(epoch)

    @property
    def labels(self):
        return self.source.labels

    def __getitem__(self, position: int) -> dict:
        row = int(self.source.indices[position])
        item = {"index": torch.tensor(position, dtype=torch.long), "image_features": self.image[position],
                "text_features": self.text[self.offsets[position] + self.source.caption_index(row)]}
        if self.source.data.labels is not None:
            item["label"] = torch.from_numpy(self.source.data.labels[row].astype(np.float32))
        return item


def cache_key(model, dataset: CrossModalDataset) -> str:
    """Hash of everything the cached features depend on."""
    digest = hashlib.sha1()
    for name, tensor in sorted(model.backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-d too
    digest.update(repr(dataset.transform).encode())
    digest.update(repr(dataset.tokenizer).encode())
    digest.update(repr(model.backbone).encode())  # options outside the weights (pooling, text length)
    digest.update(type(model).__name__.encode())
    images = dataset.data.images
    for row in dataset.indices:
        row = int(row)
        ref = images[row] if isinstance(images, list) else hashlib.sha1(images[row].tobytes()).hexdigest()
        digest.update(f"{ref}\0{chr(1).join(dataset.data.captions[row])}\0".encode())
    return digest.hexdigest()[:16]


@torch.no_grad()
def encode_features(model, dataset: CrossModalDataset, device: torch.device, batch_size: int,
                    num_workers: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Image features per item and text features for every caption of every item (grouped by item)."""
    images_only = copy.copy(dataset)
    images_only.modalities = ("image",)
    loader = DataLoader(images_only, batch_size=batch_size, num_workers=num_workers)
    image = torch.cat([model.image_features(b["image"].to(device)).float().cpu() for b in loader])
    captions = [c for row in dataset.indices for c in dataset.data.captions[int(row)]]
    counts = [len(dataset.data.captions[int(row)]) for row in dataset.indices]
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    text = []
    for start in range(0, len(captions), batch_size):
        tokens = text_inputs(dataset.tokenizer(captions[start:start + batch_size]))
        text.append(model.text_features(**{key: ids.to(device) for key, ids in tokens.items()}).float().cpu())
    return image, torch.cat(text), offsets


def cached_features(model, dataset: CrossModalDataset, cache_dir: str | Path, device: torch.device,
                    batch_size: int, num_workers: int) -> FeatureDataset:
    """Load the split's features from ``cache_dir`` or compute and save them (atomically) first."""
    path = Path(cache_dir) / f"{cache_key(model, dataset)}.pt"
    if path.is_file():
        state = read(path)
        get_logger().info(f"feature cache: reusing {path}")
    else:
        model.eval()
        image, text, offsets = encode_features(model, dataset, device, batch_size, num_workers)
        state = {"image": image, "text": text, "offsets": torch.from_numpy(offsets)}
        save_atomic(state, path)
        get_logger().info(f"feature cache: wrote {len(image)} image and {len(text)} caption features to {path}")
    return FeatureDataset(dataset, state["image"], state["text"], state["offsets"].numpy())
