from models.baseline import clip_baseline  # noqa: F401  (registers CLIPBaseline)
