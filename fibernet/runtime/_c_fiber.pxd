# Types for the compiled copy of fibernet/runtime/fiber.py (see fibernet/runtime/_accel.py).

cimport cython
from cpython.pythread cimport (
    PY_LOCK_ACQUIRED,
    PyLockStatus,
    PyThread_acquire_lock,
    PyThread_allocate_lock,
    PyThread_free_lock,
    PyThread_release_lock,
    PyThread_type_lock,
)


cdef extern from "pythread.h":
    ctypedef long long PY_TIMEOUT_T
    PyLockStatus PyThread_acquire_lock_timed(PyThread_type_lock, PY_TIMEOUT_T, int) nogil


cdef inline bint _wait_lock(PyThread_type_lock lock, PY_TIMEOUT_T micros):
    """Block, the GIL released, until ``lock`` is taken (True) or ``micros`` pass (-1: never)."""
    cdef PyLockStatus got
    with nogil:
        got = PyThread_acquire_lock_timed(lock, micros, 0)
    return got == PY_LOCK_ACQUIRED


cdef bint _COMPILED


@cython.final
cdef class StateLock:
    cdef PyThread_type_lock _lock
    cdef bint _locked

    cdef void _take(self)
    cdef void _drop(self)


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
    @cython.locals(fast=StateLock)
    cpdef _block_on(self, state)
    cpdef _wake(self)
    cpdef _execute(self)
    cpdef _finish(self, value, exc)
