from models.DSPH import model  # noqa: F401  (registers DSPH)
