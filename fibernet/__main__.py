"""``python -m fibernet``: the ``fibernet`` command (``serve``, ``inspect``, ``loadtest``).

The package's own entry point; the command line lives in ``fibernet_cli``, imported only here,
so that ``import fibernet`` never loads click.
"""

from __future__ import annotations


def main() -> None:
    from fibernet_cli.main import cli

    cli()


if __name__ == "__main__":
    main()
