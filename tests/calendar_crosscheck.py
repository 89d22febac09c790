#!/usr/bin/env python3
"""Cross-check redlight's PRC working calendar against the `chinesecalendar` package.

For every date 2020-01-01..2026-12-31 the workday / not-workday answer of redlight is compared
with `chinese_calendar.is_workday`. Each date must be listed exactly once, and each kind must be
consistent with the weekday (`workday` only Monday-Friday, `weekend` and `makeup` only on
Saturday/Sunday).

Input, one of:
  calendar_crosscheck.py FILE          output of `redlight calendar list --from 2020-01-01 --to 2026-12-31`
  calendar_crosscheck.py -             the same on standard input (also when no argument is given)
  calendar_crosscheck.py --toml DIR    read config/calendars/*.toml directly (tomllib) and apply the
                                       same rules as the Rust loader

Each line of the listing is `YYYY-MM-DD<TAB>kind`, kind one of workday, weekend, holiday, makeup.

Exit status 0 and `calendar: N passed, 0 failed` when everything agrees; 1 with each mismatching
date (both sources' answers) otherwise, and 1 too when the input cannot be read or parsed
(argparse's own usage errors exit 2).

Needs Python 3.11+ (tomllib) and `pip install chinesecalendar==1.11.0`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import tomllib
from pathlib import Path

FIRST = dt.date(2020, 1, 1)
LAST = dt.date(2026, 12, 31)
KINDS = ("workday", "weekend", "holiday", "makeup")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class InputError(Exception):
    pass


def parse_date(text: str, where: str) -> dt.date:
    if not DATE_RE.match(text):
        raise InputError(f"{where}: bad date {text!r} (expected YYYY-MM-DD)")
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise InputError(f"{where}: bad date {text!r}: {exc}") from None


def read_listing(lines, source: str) -> tuple[dict[dt.date, str], list[str]]:
    """Parses `YYYY-MM-DD<TAB>kind` lines. Returns the kinds and a list of duplicate-date problems."""
    kinds: dict[dt.date, str] = {}
    problems: list[str] = []
    for n, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        where = f"{source}:{n}"
        parts = line.split("\t")
        if len(parts) != 2:
            raise InputError(f"{where}: expected `YYYY-MM-DD<TAB>kind`, got {line!r}")
        day = parse_date(parts[0].strip(), where)
        kind = parts[1].strip()
        if kind not in KINDS:
            raise InputError(f"{where}: unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
        if day in kinds:
            problems.append(f"{day}: listed more than once ({kinds[day]}, then {kind} at {where})")
            continue
        kinds[day] = kind
    if not kinds:
        raise InputError(f"{source}: no dates listed")
    return kinds, problems


def expand(entry: str, where: str) -> list[dt.date]:
    if ".." in entry:
        a, b = entry.split("..", 1)
        start, end = parse_date(a, where), parse_date(b, where)
        if end < start:
            raise InputError(f"{where}: range {entry!r} ends before it starts")
        return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    return [parse_date(entry, where)]


def read_toml_dir(directory: Path) -> dict[dt.date, str]:
    """Applies the loader's rules: Mon-Fri work unless `off`, Sat/Sun off unless in `workdays`."""
    files = sorted(p for p in directory.glob("*.toml") if p.is_file())
    if not files:
        raise InputError(f"{directory}: no *.toml calendar files")
    off: set[dt.date] = set()
    makeup: set[dt.date] = set()
    years: dict[int, Path] = {}
    for path in files:
        with path.open("rb") as fh:
            try:
                data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise InputError(f"{path}: {exc}") from None
        year = data.get("year")
        if not isinstance(year, int):
            raise InputError(f"{path}: missing or non-integer `year`")
        if not isinstance(data.get("notice"), str) or not data["notice"].strip():
            raise InputError(f"{path}: missing `notice`")
        if year in years:
            raise InputError(f"{path}: year {year} already loaded from {years[year]}")
        years[year] = path
        for i, hol in enumerate(data.get("holiday", [])):
            name = hol.get("name", f"#{i + 1}")
            where = f"{path} [{name}]"
            for entry in hol.get("off", []):
                for day in expand(entry, where):
                    if day.year != year:
                        raise InputError(f"{where}: off date {day} is outside {year}")
                    off.add(day)
            for entry in hol.get("workdays", []):
                day = parse_date(entry, where)
                if day.year != year:
                    raise InputError(f"{where}: make-up workday {day} is outside {year}")
                if day.weekday() < 5:
                    raise InputError(f"{where}: make-up workday {day} is a {day:%A}, not a weekend day")
                makeup.add(day)
    both = off & makeup
    if both:
        raise InputError(f"{directory}: listed both off and as make-up workday: {sorted(both)}")
    ys = sorted(years)
    for a, b in zip(ys, ys[1:]):
        if b != a + 1:
            raise InputError(f"{directory}: gap between years {a} and {b}")
    kinds: dict[dt.date, str] = {}
    day = dt.date(ys[0], 1, 1)
    while day <= dt.date(ys[-1], 12, 31):
        if day in off:
            kinds[day] = "holiday"
        elif day in makeup:
            kinds[day] = "makeup"
        elif day.weekday() >= 5:
            kinds[day] = "weekend"
        else:
            kinds[day] = "workday"
        day += dt.timedelta(days=1)
    return kinds


def check(kinds: dict[dt.date, str], problems: list[str]) -> int:
    import chinese_calendar

    passed = 0
    failed = list(problems)
    day = FIRST
    while day <= LAST:
        theirs = chinese_calendar.is_workday(day)
        theirs_text = "workday" if theirs else "not a workday"
        detail = chinese_calendar.get_holiday_detail(day)
        if detail[1]:
            theirs_text += f" ({detail[1]})"
        kind = kinds.get(day)
        weekend = day.weekday() >= 5
        if kind is None:
            failed.append(f"{day}: missing from redlight's listing; chinesecalendar: {theirs_text}")
        elif (kind in ("workday", "makeup")) != theirs:
            failed.append(f"{day} ({day:%a}): redlight: {kind}; chinesecalendar: {theirs_text}")
        elif kind == "workday" and weekend:
            failed.append(f"{day} ({day:%a}): redlight says `workday` on a weekend day (should be `makeup`)")
        elif kind in ("weekend", "makeup") and not weekend:
            failed.append(f"{day} ({day:%a}): redlight says `{kind}` on a weekday")
        else:
            passed += 1
        day += dt.timedelta(days=1)
    for line in failed:
        print(line)
    print(f"calendar: {passed} passed, {len(failed)} failed")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("listing", nargs="?", default="-", help="output of `redlight calendar list` (default: stdin)")
    ap.add_argument("--toml", metavar="DIR", type=Path, help="read the TOML calendar files directly instead")
    args = ap.parse_args(argv)
    try:
        if args.toml is not None:
            kinds, problems = read_toml_dir(args.toml), []
        elif args.listing == "-":
            kinds, problems = read_listing(sys.stdin, "<stdin>")
        else:
            with open(args.listing, encoding="utf-8") as fh:
                kinds, problems = read_listing(fh, args.listing)
    except (InputError, OSError) as exc:
        print(f"calendar_crosscheck: {exc}", file=sys.stderr)
        print("calendar: 0 passed, 1 failed")
        return 1
    return check(kinds, problems)


if __name__ == "__main__":
    sys.exit(main())
