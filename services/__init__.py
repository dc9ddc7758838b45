"""The six nameko services, one package each."""
