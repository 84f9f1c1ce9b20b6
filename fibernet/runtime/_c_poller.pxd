# Types for the compiled copy of fibernet/runtime/poller.py (see fibernet/runtime/_accel.py).

cimport cython

# The event masks the poll loop tests, as C ints (EPOLLIN and EPOLLOUT stay Python ints:
# other modules import them).
cdef int _READ_EVENTS, _WRITE_EVENTS, _ONESHOT, _END_EVENTS, _IN, _OUT


cdef class _Watch:
    cdef public list readers
    cdef public list writers
    cdef public int armed
    cdef public bint edge
    cdef public object owner
    cdef public int pending

    cpdef int wanted(self)


cdef class Poller:
    cdef public object _epoll
    cdef public dict _watches
    cdef public dict _internal
    cdef public set _known

    @cython.locals(w=_Watch)
    cpdef watch(self, int fd, int events, object callback)
    @cython.locals(w=_Watch)
    cpdef bint take_pending(self, int fd, int events)
    cpdef _arm(self, int fd, _Watch w)
    @cython.locals(w=_Watch, fd=int, ev=int)
    cpdef poll(self, double timeout, object awake=*)
