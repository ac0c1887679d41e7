from models.backbones import clip  # noqa: F401
