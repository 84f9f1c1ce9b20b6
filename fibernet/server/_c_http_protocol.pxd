# Types for the compiled copy of fibernet/server/http_protocol.py (see fibernet/runtime/_accel.py).

cimport cython

from fibernet._c_http cimport Request as _Request


cdef class RequestHead(_Request):
    cdef public bint keep_alive
    cdef public bint chunked
    cdef public object content_length
    cdef public bint expect_continue
    cdef public bint upgrade
    cdef public bint _proxied


cdef class ServerProtocol:
    cdef public object limits
    cdef public Py_ssize_t _max_head
    cdef public Py_ssize_t _max_line
    cdef public object _max_fields
    cdef public object _max_field
    cdef public object _max_body
    cdef public object _parser
    cdef public object _events
    cdef public int _state
    cdef public object _error
    cdef public bytes _url
    cdef public tuple _last_target
    cdef public bytes _good_host
    cdef public object _data
    cdef public list _pieces
    cdef public object _lines_of
    cdef public Py_ssize_t _line_end
    cdef public bint _body_head
    cdef public bint _ends
    cdef public bint _proxied
    cdef public list _fields
    cdef public int _hosts
    cdef public bint _framing
    cdef public bint _connection
    cdef public object _codings
    cdef public bint _te_tab
    cdef public bint _relay
    cdef public object _rest
    cdef public object _held
    cdef public object _length
    cdef public object _expect
    cdef public Py_ssize_t _head_bytes
    cdef public Py_ssize_t _body_bytes
    cdef public Py_ssize_t _body_overhead
    cdef public Py_ssize_t _chunks
    cdef public bint _chunked
    cdef public Py_ssize_t _trailer_bytes

    cpdef bint clean(self)
    @cython.locals(state=int, n=Py_ssize_t, room=Py_ssize_t)
    cpdef feed(self, data)
    @cython.locals(state=int)
    cpdef _parse(self, data)
    cpdef _keep_piece(self, data)
    @cython.locals(state=int)
    cpdef _unfinished(self)
    cpdef _check_overhead(self)
    cpdef _fail(self, error)
    @cython.locals(head_bytes=Py_ssize_t, url=bytes, last=tuple, keep_alive=bint, head=RequestHead)
    cpdef on_headers_complete(self)
    @cython.locals(fields=list, name=bytes, value=bytes)
    cpdef on_header(self, name, value)
    cpdef on_url(self, url)
    cpdef on_message_begin(self)
    cpdef on_message_complete(self)
    cpdef on_body(self, body)
    cpdef on_chunk_header(self)


cdef dict _METHOD_NAMES
cdef frozenset _SPECIAL
