#!/usr/bin/env python3
"""Events for scripts/soak.sh: whole approval cases (accepted, reviewed, decided, certificate
issued, completed; one in ten decided late), in the order of their times, for ever.

Event time runs SPEED times faster than the wall clock, starting BASE_DAYS ago, so that in
a run of minutes cases open, close, and are forgotten `engine.retention_days` after their
last event, as over months of a real deployment. New cases come at RATE a second; each
case's later events follow when event time reaches them. Prints `case-id<TAB>json` lines
for the console producer (scripts/kafka.sh produce ... with parse.key=true).

    scripts/soak-events.py BASE_DAYS SPEED RATE
"""
import datetime as dt
import heapq
import json
import random
import sys
import time


def main():
    base_days, speed, rate = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    tz = dt.timezone(dt.timedelta(hours=8))
    rnd = random.Random(7)
    # Names as long as real ones, for the board's layout (a department column squeezed by
    # four-digit counts).
    cities = ["银川市", "石嘴山市", "吴忠市", "固原市", "中卫市", "忻州市"]
    offices = ["市场监督管理局", "住房和城乡建设局", "应急管理局", "自然资源局", "行政审批服务局"]
    departments = [c + o for c in cities for o in offices]
    wall0 = time.time()
    base = dt.datetime.now(tz) - dt.timedelta(days=base_days)
    pending, opened, seq = [], 0, 0

    def line(case, kind, at, data, k):
        return case + "\t" + json.dumps(
            {"specversion": "1.0", "id": f"{case}-{k}", "source": "/soak", "type": kind,
             "time": at.isoformat(timespec="seconds"), "subject": case,
             "datacontenttype": "application/json", "data": data},
            ensure_ascii=False)

    while True:
        elapsed = time.time() - wall0
        now = base + dt.timedelta(seconds=elapsed * speed)
        while opened < elapsed * rate:
            opened += 1
            case = f"SOAK-{opened:08d}"
            late = rnd.random() < 0.1
            data = {"department": rnd.choice(departments), "item": f"事项{rnd.randrange(100)}",
                    "handler": f"办理人{rnd.randrange(300)}", "kind": "promised",
                    "promised_workdays": 10}
            steps = [("approval.accepted", 0, data),
                     ("approval.reviewed", 1, {"handler": data["handler"]}),
                     ("approval.decided", 20 if late else 3, {"outcome": "approved"}),
                     ("approval.certificate_issued", 21 if late else 4, {}),
                     ("approval.completed", 22 if late else 5, {})]
            for k, (kind, days, d) in enumerate(steps):
                seq += 1
                heapq.heappush(pending, (now + dt.timedelta(days=days), seq, case, kind, d, k))
        lines = []
        while pending and pending[0][0] <= now:
            at, _, case, kind, d, k = heapq.heappop(pending)
            lines.append(line(case, kind, at, d, k))
        if lines:
            try:
                sys.stdout.write("\n".join(lines) + "\n")
                sys.stdout.flush()
            except BrokenPipeError:
                return
        time.sleep(0.05)


if __name__ == "__main__":
    main()
