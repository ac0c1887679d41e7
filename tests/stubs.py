"""Stand-ins shared by the model tests."""
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
