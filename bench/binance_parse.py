"""Binance parse + normalize rate: combined-stream trade frames -> Arrow ``trade`` events.

Usage: python bench/binance_parse.py [--messages 1000000] [--stream trade|aggTrade]

Builds frames exactly as Binance sends them (two symbols interleaved, consecutive trade
ids, decimal strings), then times :class:`TradeParser` feeding every frame (JSON decode,
validation, id sequencing for duplicates/gaps) and taking Arrow tables every 4,096
frames, on one core. Prints messages/s; the target (issue 4) is >= 200,000/s.
"""

from __future__ import annotations

import argparse
import random
import time


from qsframework.adapters.binance.protocol import TradeParser  # noqa: E402


def frames(n: int, stream: str, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    out = []
    ids = {"BTCUSDT": 4_200_000_000, "ETHUSDT": 1_900_000_000}
    px = {"BTCUSDT": 95_000.0, "ETHUSDT": 3_300.0}
    t = 1_767_571_200_000
    for i in range(n):
        sym = "BTCUSDT" if rng.random() < 0.6 else "ETHUSDT"
        ids[sym] += 1
        px[sym] *= 1 + rng.gauss(0, 1e-5)
        t += rng.random() < 0.3
        p, q = f"{px[sym]:.2f}", f"{rng.lognormvariate(-5, 1.5):.5f}"
        m = "true" if rng.random() < 0.5 else "false"
        if stream == "trade":
            data = (f'{{"e":"trade","E":{t + 1},"s":"{sym}","t":{ids[sym]},"p":"{p}","q":"{q}",'
                    f'"T":{t},"m":{m},"M":true}}')
        else:
            data = (f'{{"e":"aggTrade","E":{t + 1},"s":"{sym}","a":{ids[sym]},"p":"{p}","q":"{q}",'
                    f'"f":{ids[sym] * 2},"l":{ids[sym] * 2 + 1},"T":{t},"m":{m},"M":true}}')
        out.append(f'{{"stream":"{sym.lower()}@{stream}","data":{data}}}')
    return out


def run(msgs: list[str], stream: str) -> tuple[float, int]:
    parser = TradeParser(("BTCUSDT", "ETHUSDT"), stream=stream)
    rows = 0
    t0 = time.perf_counter()
    now = time.time_ns()
    feed = parser.feed
    for i, frame in enumerate(msgs, 1):
        feed(frame, now)
        if not i & 4095:
            rows += parser.take_trades().num_rows
    rows += parser.take_trades().num_rows
    return time.perf_counter() - t0, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--stream", choices=["trade", "aggTrade"], default="trade")
    ap.add_argument("--repeat", type=int, default=3, help="runs; the fastest counts")
    args = ap.parse_args()
    msgs = frames(args.messages, args.stream)
    best, rows = min(run(msgs, args.stream) for _ in range(args.repeat))
    assert rows == len(msgs), (rows, len(msgs))
    rate = len(msgs) / best
    print(f"{args.stream}: parsed and normalized {len(msgs):,} frames in {best:.2f} s -> {rate:,.0f} msg/s "
          f"({'PASS' if rate >= 200_000 else 'MISS'} target 200,000 msg/s)")


if __name__ == "__main__":
    main()
