# Types for the compiled copy of fibernet/net/readiness.py (see fibernet/runtime/_accel.py).

from fibernet.ops._c_operation cimport OpState as _OpState


cdef class FdWait(_OpState):
    pass
