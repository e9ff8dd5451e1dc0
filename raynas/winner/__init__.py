"""The winner of a search: retrain the best architectures, export one, load it, compress it."""
