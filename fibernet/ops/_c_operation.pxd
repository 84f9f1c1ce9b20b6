# Types for the compiled copy of fibernet/ops/operation.py (see fibernet/runtime/_accel.py).
