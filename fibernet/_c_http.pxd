# Types for the compiled copy of fibernet/http.py (see fibernet/runtime/_accel.py): the
# request and the response as extension types, whose fields the server's compiled connection
# loop (fibernet/server/http.py) and parser (http_protocol.py) reach directly.

cdef class Request:
    cdef public object method
    cdef public object target
    cdef public object path
    cdef public object raw_path
    cdef public object query
    cdef public object http_version
    cdef public object _headers
    cdef public object _fields
    cdef public object client
    cdef public object scheme
    cdef public object _body_source
    cdef public object _body
    cdef public object _consumed
    cdef public object _websocket


cdef class Response:
    cdef public object status
    cdef public object headers
    cdef public object body
    cdef public object _fast
