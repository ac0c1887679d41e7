"""Backbones (one family per file), registered under ``backbone``.

Every backbone is an ``nn.Module``: a model argument annotated ``nn.Module`` is a sub-section of the model's
config (``model.backbone: {name: CLIP, ...}``), built through this registry kind.
"""
from torch import nn

from common.register import registry

registry.set_base("backbone", nn.Module)

from models.backbones import clip  # noqa: E402,F401
from models.backbones import vit  # noqa: E402,F401
from models.backbones import resnet  # noqa: E402,F401
from models.backbones import transformers_text  # noqa: E402,F401
