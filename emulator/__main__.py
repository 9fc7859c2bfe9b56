"""``python -m emulator``: run the local Cloud Tasks until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from emulator.config import ConfigError, load_config
from emulator.server import Emulator


def default_db() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "enqueuer" / "emulator.db"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m emulator",
        description="A local Google Cloud Tasks v2 (gRPC) with an OIDC issuer, state in SQLite.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8123, help="gRPC port (default 8123; 0: any)")
    p.add_argument("--http-port", type=int, default=8124,
                   help="HTTP port for OIDC discovery and certs (default 8124; 0: any)")
    p.add_argument("--db", default=None,
                   help=f"SQLite file for the state (default {default_db()}; "
                        "':memory:' keeps nothing)")
    p.add_argument("--config", default=None,
                   help="TOML file: project, location and queues created at start")
    p.add_argument("--log-level", default="INFO", help="DEBUG shows every dispatch")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"emulator: {e}", file=sys.stderr)
        return 2
    db = args.db or str(default_db())
    emulator = Emulator(config, db=db, host=args.host, port=args.port, http_port=args.http_port)
    try:
        await emulator.start()
    except (ConfigError, OSError) as e:
        print(f"emulator: {e}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    services = " ".join(f"{name}={url}" for name, url in emulator.cloud_run.urls().items())
    print(
        f"Cloud Tasks emulator ready: gRPC {args.host}:{emulator.port}, "
        f"HTTP {emulator.http_url}, project {config.project}, location {config.location}, "
        f"state {db}" + (f", services {services}" if services else ""),
        flush=True,
    )
    await stop.wait()
    await emulator.stop()
    print("Cloud Tasks emulator stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
