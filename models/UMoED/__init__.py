from models.UMoED import model  # noqa: F401  (registers UMoED)
