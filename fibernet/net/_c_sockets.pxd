# Types for the compiled copy of fibernet/net/sockets.py (see fibernet/runtime/_accel.py).

cimport cython

from fibernet.net._c_readiness cimport FdWait as _FdWait
from fibernet.runtime._c_fiber cimport Fiber as _Fiber
from fibernet.runtime._c_poller cimport Poller as _Poller
from fibernet.runtime._c_scheduler cimport Scheduler as _Scheduler
from fibernet.runtime._c_scheduler cimport loops_running


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


# -- the system calls of the per-request path (see _sys_recv in sockets.py) -----------------

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from libc.errno cimport EAGAIN, EINTR
from libc.errno cimport errno as c_errno


cdef extern from "errno.h":
    const int EWOULDBLOCK

cdef extern from "sys/socket.h" nogil:
    ssize_t c_recv "recv" (int fd, void *buf, size_t n, int flags)
    ssize_t c_send "send" (int fd, const void *buf, size_t n, int flags)

cdef extern from *:
    """
    #define FIBERNET_RECV_BUFFER 65536
    static __thread char fibernet_recv_buffer[FIBERNET_RECV_BUFFER];
    """
    const Py_ssize_t FIBERNET_RECV_BUFFER
    char fibernet_recv_buffer[]


cdef inline object _sys_recv(object sock, int fd, Py_ssize_t bufsize):
    """recv(2) of at most ``bufsize`` bytes: bytes (b"" at the end of the stream), None if it
    would block; an error raises OSError as ``socket.recv`` does (EINTR is retried)."""
    cdef ssize_t n
    cdef int err
    cdef char *buf
    if bufsize > FIBERNET_RECV_BUFFER or bufsize < 0:
        try:
            return sock.recv(bufsize)
        except BlockingIOError:
            return None
    buf = fibernet_recv_buffer
    while True:
        if loops_running() > 1:  # the GIL is given up only for other loops
            with nogil:
                n = c_recv(fd, buf, bufsize, 0)
                err = c_errno
        else:
            n = c_recv(fd, buf, bufsize, 0)
            err = c_errno
        if n >= 0:
            return PyBytes_FromStringAndSize(buf, n)
        if err == EAGAIN or err == EWOULDBLOCK:
            return None
        if err != EINTR:
            PyErr_SetFromErrno(OSError)
        PyErr_CheckSignals()


cdef inline Py_ssize_t _sys_send(object sock, int fd, bytes data) except -2:
    """send(2) of ``data``: how many bytes went, -1 if it would block; an error raises OSError
    as ``socket.send`` does (EINTR is retried)."""
    cdef ssize_t n
    cdef int err
    cdef char *p = PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    while True:
        if loops_running() > 1:
            with nogil:
                n = c_send(fd, p, size, 0)
                err = c_errno
        else:
            n = c_send(fd, p, size, 0)
            err = c_errno
        if n >= 0:
            return n
        if err == EAGAIN or err == EWOULDBLOCK:
            return -1
        if err != EINTR:
            PyErr_SetFromErrno(OSError)
        PyErr_CheckSignals()
