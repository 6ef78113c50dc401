#!/usr/bin/python3
"""Reads the running cairn-desktop's accessibility tree over AT-SPI (what a screen reader
sees) and prints one JSON object: the controls that are visible (GTK 4.8 marks every widget of
the window tree, on any page of a stack, as visible but none as showing), and those among
them that have no accessible name. Used by desktop/tests/window.rs; needs Debian's python3-pyatspi and
the session bus the app runs on (DBUS_SESSION_BUS_ADDRESS).

Usage: a11y.py APP_NAME [TIMEOUT_SECONDS]
"""

import json
import re
import sys
import time

import pyatspi

CONTROL_ROLES = {
    pyatspi.ROLE_PUSH_BUTTON,
    pyatspi.ROLE_TOGGLE_BUTTON,
    pyatspi.ROLE_CHECK_BOX,
    pyatspi.ROLE_RADIO_BUTTON,
    pyatspi.ROLE_TEXT,
    pyatspi.ROLE_ENTRY,
    pyatspi.ROLE_PASSWORD_TEXT,
    pyatspi.ROLE_COMBO_BOX,
    pyatspi.ROLE_SLIDER,
    pyatspi.ROLE_SPIN_BUTTON,
    pyatspi.ROLE_LINK,
    pyatspi.ROLE_MENU_ITEM,
}
if hasattr(pyatspi, "ROLE_SWITCH"):
    CONTROL_ROLES.add(pyatspi.ROLE_SWITCH)


CLASS_NAME = re.compile(r"^(Gtk|Adw)[A-Z]\w*$")


def find_app(name, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        desktop = pyatspi.Registry.getDesktop(0)
        for index in range(desktop.childCount):
            app = desktop.getChildAtIndex(index)
            if app is not None and name.lower() in (app.name or "").lower():
                return app
        time.sleep(0.3)
    return None


def walk(node, trail, out, depth=0):
    if node is None or depth > 200:
        return
    try:
        states = node.getState()
        visible = states.contains(pyatspi.STATE_VISIBLE)
        role = node.getRole()
        name = (node.name or "").strip()
    except Exception:  # a widget that went away while being read
        return
    if not visible and role != pyatspi.ROLE_APPLICATION and depth > 0:
        return
    here = trail + [f"{node.getRoleName()}:{name}"]
    if role in CONTROL_ROLES:
        out["controls"] += 1
        # A widget's class name is what GTK falls back to: no name a person could use.
        if not name or CLASS_NAME.match(name):
            out["unnamed"].append(" > ".join(here[-4:]))
        else:
            out["names"].append(name)
    for index in range(node.childCount):
        try:
            child = node.getChildAtIndex(index)
        except Exception:
            continue
        walk(child, here, out, depth + 1)


def main():
    name = sys.argv[1]
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
    app = find_app(name, timeout)
    if app is None:
        print(json.dumps({"error": f"no application named {name!r} on the accessibility bus"}))
        return 2
    out = {"controls": 0, "unnamed": [], "names": []}
    walk(app, [], out)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
