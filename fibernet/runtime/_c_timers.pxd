# Types for the compiled copy of fibernet/runtime/timers.py (see fibernet/runtime/_accel.py).

cdef class TimerQueue:
    cdef public list _heap
    cdef public Py_ssize_t _dead
    cdef public object _seq

    cpdef list add(self, double deadline, object callback)
    cpdef next_deadline(self)
    cpdef fire_due(self, double now)
    cpdef clear(self)
