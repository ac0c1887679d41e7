from models.DCMHT import model  # noqa: F401  (registers DCMHT)
