# Types for the compiled copy of fibernet/runtime/fiber.py (see fibernet/runtime/_accel.py).
