from models.DNPH import model  # noqa: F401  (registers DNPH)
