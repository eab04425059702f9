#!/usr/bin/env python3
"""The best Card Precision@k any model can reach on a handbook-layout CSV that keeps
the simulator's TX_FRAUD_SCENARIO column, under `paystream backtest`'s protocol.

    cp_ceiling.py FILE [--train-start 2018-07-25] [--k 100]

A model scores a payment from what has been reported by the payment's time. Fraud
scenario 2 (a compromised terminal: all its payments fraud for 28 days) changes
nothing about the payments themselves, so until the first fraud label at that terminal
arrives (the labels' delay after the compromise began) its frauds look exactly like
genuine payments. This script scores a payment 1 when it is a fraud with evidence and
0 otherwise, where "with evidence" means any fraud but a scenario-2 fraud whose
terminal has no fraud in (t - delay - 30 days, t - delay] (the window the terminal
features read), and reports CP@k for that scorer and for a perfect one. The split and
CP@k follow `paystream backtest` (and the handbook): train days from --train-start,
test days after the delay, cards known compromised removed, cards detected on earlier
test days not counted again. Cards of equal score are taken in an arbitrary fixed
order (a hash of the card), so a card without evidence is in the top k only by chance,
as it would be for a real model. Standard library only.
"""

import argparse
import bisect
import csv
import datetime
import zlib
from collections import defaultdict

DAY = 86400


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--train-start", default="2018-07-25")
    parser.add_argument("--train-days", type=int, default=7)
    parser.add_argument("--delay-days", type=int, default=7)
    parser.add_argument("--test-days", type=int, default=7)
    parser.add_argument("--k", type=int, default=100)
    args = parser.parse_args()

    rows = []
    with open(args.file) as f:
        for r in csv.DictReader(f):
            if float(r["TX_AMOUNT"]) <= 0:
                continue  # the pipeline dead-letters these; backtest leaves them out
            when = datetime.datetime.fromisoformat(r["TX_DATETIME"]).replace(tzinfo=datetime.timezone.utc)
            t = when.timestamp()
            rows.append((t, r["CUSTOMER_ID"], r["TERMINAL_ID"], r["TX_FRAUD"] == "1", int(r["TX_FRAUD_SCENARIO"])))
    rows.sort(key=lambda r: r[0])
    day = lambda t: int(t // DAY)
    delay = args.delay_days * DAY

    fraud_times = defaultdict(list)  # terminal -> sorted fraud times
    for t, _, terminal, fraud, _ in rows:
        if fraud:
            fraud_times[terminal].append(t)

    def evidence(t, terminal):
        times = fraud_times[terminal]
        lo = bisect.bisect_right(times, t - delay - 30 * DAY)
        hi = bisect.bisect_right(times, t - delay)
        return hi > lo

    start = day(datetime.datetime.fromisoformat(args.train_start).replace(tzinfo=datetime.timezone.utc).timestamp())
    end = start + args.train_days
    known = {c for t, c, _, fraud, _ in rows if fraud and start <= day(t) < end}
    test = []
    for k in range(args.test_days):
        known |= {c for t, c, _, fraud, _ in rows if fraud and day(t) == end + k - 1}
        test += [r for r in rows if day(r[0]) == end + args.delay_days + k and r[1] not in known]

    def card_precision(score):
        detected, per_day = set(), []
        for d in sorted({day(r[0]) for r in test}):
            cards = {}
            for r in test:
                if day(r[0]) != d or r[1] in detected:
                    continue
                s, f = cards.get(r[1], (0, False))
                cards[r[1]] = (max(s, score(r)), f or r[3])
            # Equal scores in an arbitrary but fixed order (a model cannot tell them apart).
            ranked = sorted(cards.items(), key=lambda item: (-item[1][0], zlib.crc32(item[0].encode())))[: args.k]
            found = [card for card, (_, fraud) in ranked if fraud]
            per_day.append(len(found) / args.k)
            detected |= set(found)
        return sum(per_day) / len(per_day), per_day

    frauds = sum(r[3] for r in test)
    blind = sum(1 for r in test if r[3] and r[4] == 2 and not evidence(r[0], r[2]))
    print(f"test: {len(test)} payments, {frauds} frauds, {blind} of them scenario 2 without evidence")
    for name, score in [
        ("perfect", lambda r: int(r[3])),
        ("perfect where there is evidence", lambda r: int(r[3] and not (r[4] == 2 and not evidence(r[0], r[2])))),
    ]:
        mean, per_day = card_precision(score)
        print(f"CP@{args.k} {name}: {mean:.3f} (per day {' '.join(f'{p:.2f}' for p in per_day)})")


if __name__ == "__main__":
    main()
