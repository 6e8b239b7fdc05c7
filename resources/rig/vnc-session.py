"""One VNC session across the guest's mode change (rig scenario vnc), driven through vncdotool's
own client API (the client is vncdotool; this only sequences it):

    vnc-session.py SERVER BEFORE.png AFTER.png MODE_FILE

connects to SERVER (host::port or a unix socket path), captures the screen to BEFORE.png,
presses and releases F12 (which ends the guest's first step: it then changes mode), waits until
MODE_FILE exists (the scenario creates it when the guest says the new mode is shown; at most
600 s), captures again on the same connection to AFTER.png (the server first announces the new
size with DesktopSize) and disconnects. Prints `vnc-session: <event> <seconds since start>`
lines."""
import os
import sys
import time

from vncdotool import api

server, before, after, mode_file = sys.argv[1:5]
t0 = time.monotonic()


def say(what):
    print(f"vnc-session: {what} {time.monotonic() - t0:.2f}", flush=True)


client = api.connect(server)
say("connected")
client.captureScreen(before)
say("captured-before")
client.keyPress("f12")
say("pressed-f12")
for _ in range(6000):
    if os.path.exists(mode_file):
        break
    time.sleep(0.1)
else:
    say("no-mode-change")
client.captureScreen(after)
say("captured-after")
client.disconnect()
api.shutdown()
