"""Search with a trained model: index directories of packed codes, faiss binary backends, sources of items,
the results figure and the local search page (``tools/search.py`` is the command line)."""
