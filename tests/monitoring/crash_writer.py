"""Child process for the kill -9 test: writes tracked events until it is killed.

Prints each event's id only after the store committed it (``add_event`` returned).
Usage: python crash_writer.py DB_PATH
"""

import sys

from monitoring import Store, Tracker


def main(path: str) -> int:
    store = Store(path)
    tracker = Tracker(store=store, session_id=store.start_session("crash-writer"))
    count = 0
    while True:
        with tracker.track("synthesis", "crash", n=count) as handle:
            bytearray(4096)
        if handle.store_error is not None:
            print(f"store error: {handle.store_error}", file=sys.stderr, flush=True)
            return 1
        print(handle.event_id, flush=True)
        count += 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
