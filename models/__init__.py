"""Importing this package registers every backbone and method (one explicit line each)."""
from models import backbones  # noqa: F401
from models import DCMHT  # noqa: F401
from models import baseline  # noqa: F401
from models import DNPH  # noqa: F401
from models import MITH  # noqa: F401
from models import DSPH  # noqa: F401
from models import UMoED  # noqa: F401
from models import DIMCH  # noqa: F401
from models import TwDH  # noqa: F401
from models import WCH  # noqa: F401
from models import TwoTower  # noqa: F401
