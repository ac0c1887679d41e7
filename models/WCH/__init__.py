from models.WCH import model  # noqa: F401  (registers WCH)
