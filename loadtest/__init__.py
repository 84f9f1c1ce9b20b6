"""fibernet's load generator and benchmarks, installed as ``fibernet_loadtest``.

Each public module is a script: ``python loadtest/load.py --help`` in a checkout, or
``fibernet loadtest load --help`` from any install (``fibernet loadtest`` lists them).  The load
generator needs the ``loadtest`` extra: ``pip install 'fibernet[loadtest]'``.
"""
