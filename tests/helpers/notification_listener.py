"""A notification server for the tests: owns org.freedesktop.Notifications
on the session bus ($DBUS_SESSION_BUS_ADDRESS), prints each Notify call's
arguments as one JSON line with the caller's uid, and answers with an id,
as a desktop's notification daemon would.  Prints "ready" once it owns the
name.  Run with jeepney importable."""

import json
import sys

from jeepney import HeaderFields, MessageType, new_method_return
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection

NAME = "org.freedesktop.Notifications"


def main() -> int:
    conn = open_dbus_connection(bus="SESSION")
    reply = conn.send_and_get_reply(message_bus.RequestName(NAME, 4))   # DO_NOT_QUEUE
    if reply.body[0] != 1:
        print(f"could not own {NAME}: {reply.body}", file=sys.stderr)
        return 1
    print("ready", flush=True)
    n = 0
    while True:
        msg = conn.receive()
        h = msg.header
        if h.message_type != MessageType.method_call:
            continue
        member = h.fields.get(HeaderFields.member)
        if member == "Notify":
            n += 1
            uid = conn.send_and_get_reply(message_bus.GetConnectionUnixUser(h.fields[HeaderFields.sender])).body[0]
            app, _replaces, _icon, summary, body, _actions, hints, timeout = msg.body
            print(json.dumps({"app": app, "summary": summary, "body": body, "timeout": timeout, "uid": uid,
                              "urgency": hints.get("urgency", ("y", None))[1]}), flush=True)
            conn.send(new_method_return(msg, "u", (n,)))
        elif member == "GetServerInformation":
            conn.send(new_method_return(msg, "ssss", ("test", "memguard", "1", "1.2")))


if __name__ == "__main__":
    sys.exit(main())
