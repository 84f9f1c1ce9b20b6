# Types for the compiled copy of fibernet/ops/operation.py (see fibernet/runtime/_accel.py).

cimport cython

from fibernet.runtime._c_fiber cimport Fiber as _Fiber, StateLock as _StateLock
from fibernet.runtime._c_scheduler cimport Scheduler as _Scheduler

cdef bint _COMPILED


# One per blocking perform and per socket wait: a free list spares the allocator.
@cython.freelist(64)
cdef class OpState:
    cdef public bint done
    cdef public bint woken
    cdef public Py_ssize_t index
    cdef public object value
    cdef public object owner
    cdef public object ctx
    cdef public object op
    cdef public object lock

    @cython.locals(fiber=_Fiber, sched=_Scheduler, fast=_StateLock)
    cpdef bint complete(self, Py_ssize_t index, object value, object held=*)
    cpdef bint finish_self(self, Py_ssize_t index, object value)

@cython.locals(sched=_Scheduler, fiber=_Fiber, state=OpState, index=Py_ssize_t)
cpdef perform(op)
