"""The default handler of ``fibernet serve``: send back every byte received."""


def handle(conn):
    while data := conn.recv(65536):
        conn.sendall(data)
