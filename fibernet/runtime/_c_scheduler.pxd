# Types for the compiled copy of fibernet/runtime/scheduler.py (see fibernet/runtime/_accel.py).

cimport cython

from fibernet.runtime._c_fiber cimport Fiber as _Fiber
from fibernet.runtime._c_poller cimport Poller as _Poller
from fibernet.runtime._c_timers cimport TimerQueue as _TimerQueue


cdef Py_ssize_t _loops

cpdef Py_ssize_t loops_running()


cdef class Scheduler:
    cdef public object name
    cdef public object runtime
    cdef public object clock
    cdef public _Fiber current
    cdef public object thread
    cdef public unsigned long _ident
    cdef public object _runq
    cdef public object _stealable
    cdef public _TimerQueue _timers
    cdef public _Poller _poller
    cdef public object _wakeup
    cdef public bint _sleeping
    cdef public bint _stopping
    cdef public object _hub
    cdef public list _free_runners
    cdef public Py_ssize_t _budget
    cdef public object _state_lock
    cdef public object _random
    cdef public set _fibers
    cdef public dict _unjoined
    cdef public object _dropped
    cdef public Py_ssize_t turns
    cdef object __weakref__

    cpdef Py_ssize_t fiber_count(self)
    cpdef _resume(self, _Fiber fiber)
    @cython.locals(fiber=_Fiber)
    cpdef _park(self)
    cpdef _greenlet_for(self, _Fiber fiber)
    cpdef _start(self, _Fiber fiber, runner)
    cpdef _awake(self)
    @cython.locals(fiber=_Fiber)
    cpdef _turn(self, bint may_block)
    cpdef _run_fiber(self, _Fiber fiber)
    @cython.locals(fiber=_Fiber)
    cpdef _runner_main(self)
