"""Handler modules that ``fibernet serve`` runs as they are (``echo`` is the default)."""
