"""The servers the benchmarks start, one small script each (fibernet's side and its peers').

Each runs in the foreground: ``python loadtest/peers/NAME.py --host H --port P [OPTIONS]``
(port 0: any free port), prints ``READY <port>`` once it listens, and serves until it is
killed.  ``_serve.py`` holds what they share.
"""

import os
import sys

# The scripts import their shared module as ``_serve`` (they run from this folder); so may
# a benchmark that imports one of them.
if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
