"""Time as botstate writes it: the stored form (UTC, milliseconds, Z), RFC 3339 input, log stamps."""

import calendar
import datetime
import re

RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
# What an RFC 3339 time outside years 1-9999 in UTC reads as: before, or after, every stored time.
BEFORE_EVERY_TIME = "0000"
AFTER_EVERY_TIME = "9999-99"
STORED_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def stored_time(moment):
    """An aware UTC datetime in the stored form: 2024-01-15T10:30:00.123Z."""
    # strftime's %Y writes year 999 as "999", which would sort after "2026".
    return f"{moment.year:04d}" + moment.strftime("-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def stored_time_of(unix_time):
    """A Unix time in the stored form, to the millisecond (rounded down)."""
    whole = int(unix_time)
    moment = datetime.datetime.fromtimestamp(whole, datetime.UTC)
    return stored_time(moment.replace(microsecond=int((unix_time - whole) * 1000) * 1000))


def parse_stored_time(text):
    """The aware UTC datetime of a time in the stored form; ValueError when it is not one."""
    return datetime.datetime.strptime(text, STORED_FORMAT).replace(tzinfo=datetime.UTC)


def is_stored_time(text):
    """Whether `text` is exactly a time in the stored form, years 1000-9999."""
    try:
        moment = parse_stored_time(text)
    except ValueError:
        return False
    return moment.year >= 1000 and stored_time(moment) == text


def rfc3339_as_stored(text):
    """An RFC 3339 date-time in the stored form, so it compares as the times it names do.

    ValueError when it is not one. A leap second reads as :59 and its fraction, in
    the last minute of a month only. Outside years 1-9999 in UTC it is
    BEFORE_EVERY_TIME or AFTER_EVERY_TIME.
    """
    match = RFC3339.fullmatch(text)
    if match is None:
        raise ValueError("not an RFC 3339 date-time")
    local, offset = _local_time(match), _utc_offset(match)
    try:
        moment = local - offset
    except OverflowError:
        return BEFORE_EVERY_TIME if offset > datetime.timedelta(0) else AFTER_EVERY_TIME
    if match.group(6) == "60" and not _is_leap_second_minute(moment):
        raise ValueError("a leap second comes only at the end of a month")
    return stored_time(moment)


def _local_time(match):
    """The date and time of an RFC3339 match as an aware datetime, a leap second read as :59."""
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    if second > 60:
        raise ValueError("second must be 00-60")
    fraction = match.group(7) or ".0"
    return datetime.datetime(
        year,
        month,
        day,
        hour,
        minute,
        min(second, 59),
        int(fraction[1:7].ljust(6, "0")),
        tzinfo=datetime.UTC,
    )


def _utc_offset(match):
    """The time offset of an RFC3339 match (zero for Z): hours 00-23, minutes 00-59."""
    if match.group(8) is not None:
        return datetime.timedelta(0)
    hours, minutes = int(match.group(10)), int(match.group(11))
    if hours > 23 or minutes > 59:
        raise ValueError("offset must be -23:59 to +23:59")
    sign = 1 if match.group(9) == "+" else -1
    return sign * datetime.timedelta(hours=hours, minutes=minutes)


def _is_leap_second_minute(moment):
    """Whether a UTC moment is in the last minute of a month, where leap seconds go (RFC 3339 5.7)."""
    last_day = calendar.monthrange(moment.year, moment.month)[1]
    return (moment.day, moment.hour, moment.minute) == (last_day, 23, 59)
