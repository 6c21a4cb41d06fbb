"""A stand-in for llama-server in unit tests: takes its flags, serves the fake endpoint.

`FAKE_LLAMA_DELAY` (seconds) holds each chat completion, so a test can kill a
client mid-request; `FAKE_LLAMA_EXIT` makes it fail at start as a broken GGUF would.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from fakes import FakeOpenAIServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    args, _ = parser.parse_known_args()
    if os.environ.get("FAKE_LLAMA_EXIT"):
        print(f"error: failed to load model '{args.model}'", file=sys.stderr)
        sys.exit(int(os.environ["FAKE_LLAMA_EXIT"]))
    server = FakeOpenAIServer(port=args.port).start()
    server.script({"content": "ok", "delay": float(os.environ.get("FAKE_LLAMA_DELAY", "0"))})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
