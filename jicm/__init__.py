"""`jicm`: the one command operators run (`jicm --help`)."""
