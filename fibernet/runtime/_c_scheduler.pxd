# Types for the compiled copy of fibernet/runtime/scheduler.py (see fibernet/runtime/_accel.py).
