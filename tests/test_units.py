import signal

import pytest

from gpusched.units import format_duration, format_size, parse_duration, parse_signal, parse_size

K, M, G, T = 1 << 10, 1 << 20, 1 << 30, 1 << 40


# --- parse_size ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("32G", 32 * G),
    ("512M", 512 * M),
    ("1.5T", int(1.5 * T)),
    ("4K", 4 * K),
    ("1024", 1024),
    ("16GiB", 16 * G),
    ("16GB", 16 * G),
    ("16gb", 16 * G),
    ("80g", 80 * G),
    (" 2 G ", 2 * G),
    ("1P", 1 << 50),
])
def test_parse_size_accepts_human_sizes_in_binary_units(text, expected):
    assert parse_size(text) == expected


def test_parse_size_plain_integer_is_bytes():
    assert parse_size(4096) == 4096


@pytest.mark.parametrize("bad", ["", "abc", "1.5X", "G", "-1G", "12 34", "1e9", 0, -5, True, 1.5, None, [1]])
def test_parse_size_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def test_parse_size_rejects_less_than_one_byte():
    with pytest.raises(ValueError, match="at least one byte"):
        parse_size("0.5")


# --- parse_duration -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("90m", 5400.0),
    ("2h", 7200.0),
    ("1d12h", 129600.0),
    ("1d 12h", 129600.0),
    ("45s", 45.0),
    ("1h30m", 5400.0),
    ("1.5h", 5400.0),
    ("2H", 7200.0),
])
def test_parse_duration_accepts_unit_strings(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("value, expected", [(30, 30.0), (0, 0.0), (1.5, 1.5)])
def test_parse_duration_plain_numbers_are_seconds(value, expected):
    result = parse_duration(value)
    assert result == expected
    assert isinstance(result, float)


@pytest.mark.parametrize("bad", ["", "abc", "10x", "-5m", "1h 30", "h", "90", -1, -0.5, True, None, [60]])
def test_parse_duration_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_parse_duration_milliseconds():
    assert parse_duration("500ms") == pytest.approx(0.5)
    assert parse_duration("1m500ms") == pytest.approx(60.5)


# --- parse_signal -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("SIGTERM", signal.SIGTERM),
    ("TERM", signal.SIGTERM),
    ("sigusr1", signal.SIGUSR1),
    ("usr2", signal.SIGUSR2),
    (" SIGINT ", signal.SIGINT),
    (15, signal.SIGTERM),
    (2, signal.SIGINT),
])
def test_parse_signal_accepts_names_and_numbers(value, expected):
    assert parse_signal(value) == expected


@pytest.mark.parametrize("value", ["SIGKILL", "KILL", "sigkill", "SIGSTOP", "stop"])
def test_parse_signal_rejects_kill_and_stop_names(value):
    with pytest.raises(ValueError, match="can't be a stop signal"):
        parse_signal(value)


@pytest.mark.parametrize("bad", ["SIGNOPE", "", "TERMINATE", 0, 9999, True, 15.0, None])
def test_parse_signal_rejects_unknown(bad):
    with pytest.raises(ValueError):
        parse_signal(bad)


@pytest.mark.parametrize("number", [int(signal.SIGKILL), int(signal.SIGSTOP)])
def test_parse_signal_rejects_kill_and_stop_numbers(number):
    with pytest.raises(ValueError):
        parse_signal(number)


# --- formatting ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, expected", [
    (32 * G, "32G"),
    (512 * M, "512M"),
    (1536 * M, "1536M"),
    (2 * T, "2T"),
    (4 * K, "4K"),
    (512, "512"),
    (0, "0"),
    (int(1.5 * G) + 1, "1.5G"),
    (1500, "1.5K"),
])
def test_format_size(n, expected):
    assert format_size(n) == expected


@pytest.mark.parametrize("text", ["32G", "512M", "3T", "7K", "100"])
def test_format_size_round_trips_exact_sizes(text):
    assert format_size(parse_size(text)) == text


@pytest.mark.parametrize("seconds, expected", [
    (0, "0s"),
    (45, "45s"),
    (60, "1m"),
    (5400, "1h30m"),
    (3661, "1h1m1s"),
    (129600, "1d12h"),
    (86400, "1d"),
    (59.6, "1m"),
    (0.4, "0s"),
])
def test_format_duration(seconds, expected):
    assert format_duration(seconds) == expected


@pytest.mark.parametrize("text", ["90m", "2h", "1d12h", "45s", "1d1h1m1s"])
def test_format_duration_round_trips(text):
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)
