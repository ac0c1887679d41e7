from models.MITH import model  # noqa: F401  (registers MITH)
