"""The ``fibernet`` command (installed as the package ``fibernet_cli``)."""
