from models.DIMCH import model  # noqa: F401  (registers DIMCH)
