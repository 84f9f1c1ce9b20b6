# Types for the compiled copy of fibernet/runtime/fiber.py (see fibernet/runtime/_accel.py).


cdef class _FiberBase:
    pass


cdef class Fiber(_FiberBase):
    cdef public object _fn
    cdef public tuple _args
    cdef public object _name
    cdef public Py_ssize_t id
    cdef public object state
    cdef public object scheduler
    cdef public bint parallel
    cdef public object _greenlet
    cdef public object _value
    cdef public object _exc
    cdef public list _joiners
    cdef public object _op_state
    cdef public bint _cancel_pending
    cdef public object _state_lock
    cdef public object _unretrieved
    cdef public list _callbacks
    cdef public object _context
    cdef object __weakref__

    cpdef bint done(self)
    cpdef _block_on(self, state)
    cpdef _wake(self)
    cpdef _execute(self)
    cpdef _finish(self, value, exc)
