# Types for the compiled copy of fibernet/ops/channel.py (see fibernet/runtime/_accel.py).
