# Types for the compiled copy of fibernet/server/http.py (see fibernet/runtime/_accel.py).

cimport cython

from fibernet._c_http cimport Response as _Response
from fibernet.net._c_sockets cimport Socket as _Socket
from fibernet.runtime._c_scheduler cimport Scheduler as _Scheduler
from fibernet.server._c_http_protocol cimport RequestHead as _Head
from fibernet.server._c_http_protocol cimport ServerProtocol as _Protocol


@cython.locals(proto=_Protocol, parks=bint, access=bint, counts=list, fast=tuple, date=list,
               latency=Py_ssize_t, total=Py_ssize_t, fastest=double, started=double, elapsed=double,
               now=double, date_from=double, date_until=double, park_after=double,
               keep_alive=bint, head=_Head, response=_Response,
               plain=_Socket, sched=_Scheduler)
cpdef _serve_conn(conn, bint ready=*)
