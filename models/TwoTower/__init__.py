from models.TwoTower import model  # noqa: F401  (registers TwoTower)
