# Types for the compiled copy of fibernet/net/sockets.py (see fibernet/runtime/_accel.py).
