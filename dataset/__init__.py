"""Importing this package registers the tokenizers and dataset builders (one explicit line each)."""
from dataset import tokenizers  # noqa: F401
from dataset import cross_modal  # noqa: F401
from dataset import synthetic  # noqa: F401
from dataset import caption_retrieval  # noqa: F401
from dataset import single_modal  # noqa: F401
