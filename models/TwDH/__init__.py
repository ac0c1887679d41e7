from models.TwDH import model  # noqa: F401  (registers TwDH)
