#!/usr/bin/env python3
"""Runs one QMP command on a QEMU monitor socket (run.sh's watch on L1).

Usage: qmp.py SOCKET COMMAND [ARGUMENTS-JSON]
  e.g. qmp.py /tmp/x/qmp.sock inject-nmi
       qmp.py /tmp/x/qmp.sock human-monitor-command '{"command-line": "info registers"}'
Prints the command's return value: a string as it is (HMP output), anything else as JSON.
Exit: 0 on success; 1 if QEMU answered with an error or the socket failed; 2 on bad usage.
"""

import json
import socket
import sys

TIMEOUT_S = 10


def usage():
    sys.stderr.write(__doc__.split("\n\n", 1)[1])
    sys.exit(2)


def main():
    if len(sys.argv) not in (3, 4):
        usage()
    path, command = sys.argv[1], sys.argv[2]
    try:
        arguments = json.loads(sys.argv[3]) if len(sys.argv) == 4 else None
    except json.JSONDecodeError as e:
        sys.stderr.write(f"qmp: arguments are not JSON: {e}\n")
        sys.exit(2)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT_S)
            sock.connect(path)
            stream = sock.makefile("rw", encoding="utf-8")

            def send(message):
                stream.write(json.dumps(message) + "\n")
                stream.flush()

            def answer():
                # Skips the greeting and asynchronous events: the answer has "return" or "error".
                while True:
                    line = stream.readline()
                    if not line:
                        raise ConnectionError("QEMU closed the monitor socket")
                    message = json.loads(line)
                    if "return" in message or "error" in message:
                        return message

            send({"execute": "qmp_capabilities"})
            answer()
            request = {"execute": command}
            if arguments is not None:
                request["arguments"] = arguments
            send(request)
            reply = answer()
    except (OSError, ConnectionError, ValueError) as e:
        sys.stderr.write(f"qmp: {path}: {command}: {e}\n")
        sys.exit(1)
    if "error" in reply:
        sys.stderr.write(f"qmp: {command}: {reply['error'].get('desc', reply['error'])}\n")
        sys.exit(1)
    value = reply["return"]
    if isinstance(value, str):
        sys.stdout.write(value)
    elif value != {}:
        sys.stdout.write(json.dumps(value) + "\n")


if __name__ == "__main__":
    main()
