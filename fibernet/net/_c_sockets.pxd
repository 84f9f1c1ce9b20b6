# Types for the compiled copy of fibernet/net/sockets.py (see fibernet/runtime/_accel.py).

cimport cython

from fibernet.net._c_readiness cimport FdWait as _FdWait
from fibernet.runtime._c_fiber cimport Fiber as _Fiber
from fibernet.runtime._c_poller cimport Poller as _Poller
from fibernet.runtime._c_scheduler cimport Scheduler as _Scheduler


cdef class Socket:
    cdef public object _sock
    cdef public int _fd
    cdef public list _pollers
    cdef public object _home
    cdef public object timeout
    cdef public long long bytes_in
    cdef public long long bytes_out
    cdef public bint active
    cdef public bint _drained
    cdef public object _waiting
    cdef public double _expires
    cdef public object _timer
    cdef public object peer
    cdef object __weakref__

    @cython.locals(fd=int, ident='unsigned long', sched=_Scheduler, fiber=_Fiber, poller=_Poller, state=_FdWait, timer=list, index=Py_ssize_t)
    cpdef _wait(self, int events)
    @cython.locals(sched=_Scheduler)
    cpdef _Poller _move_to(self, sched)
    @cython.locals(n=Py_ssize_t)
    cpdef recv(self, Py_ssize_t bufsize)
    @cython.locals(n=Py_ssize_t)
    cpdef recv_nowait(self, Py_ssize_t bufsize)
    @cython.locals(n=Py_ssize_t, sent=Py_ssize_t, total=Py_ssize_t)
    cpdef sendall(self, data)
