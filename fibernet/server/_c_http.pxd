# Types for the compiled copy of fibernet/server/http.py (see fibernet/runtime/_accel.py).

cimport cython

from fibernet._c_http cimport Response as _Response
from fibernet.server._c_http_protocol cimport RequestHead as _Head
from fibernet.server._c_http_protocol cimport ServerProtocol as _Protocol


@cython.locals(proto=_Protocol, parks=bint, access=bint, counts=list, fast=tuple, date=list,
               latency=Py_ssize_t, total=Py_ssize_t, fastest=double, started=double, elapsed=double,
               keep_alive=bint, head=_Head, response=_Response)
cpdef _serve_conn(conn, bint ready=*)
