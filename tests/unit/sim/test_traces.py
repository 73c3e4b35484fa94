"""Trace tooling for the simulator: the synthetic generator, the shared-data converter's pieces, the format.

The modules live in hack/traces (scripts, not part of the sunblend package) and are imported from
there by file path. Nothing here reads ../shared: the converter's end-to-end test builds a tiny
stand-in of the shared folder in a temporary directory.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
TRACES = ROOT / "hack" / "traces"
BUNDLED = ROOT / "tests" / "data" / "sim"
UTC = dt.UTC


def _module(name: str) -> ModuleType:
    """Import a hack/traces module (they import each other by bare name, so the folder goes on sys.path)."""
    if str(TRACES) not in sys.path:
        sys.path.insert(0, str(TRACES))
    return importlib.import_module(name)


tracefmt = _module("tracefmt")
synthetic = _module("synthetic")
convert = _module("convert_shared")

REGIONS = synthetic.parse_regions("ap-south-1:Asia/Kolkata,eu-west-2:Europe/London")


def _at(text: str) -> dt.datetime:
    return tracefmt.parse_timestamp(text)


def _local_hours(series, region: str) -> np.ndarray:
    zone = next(r.time_zone for r in REGIONS if r.name == region)
    return synthetic.local_clock(series.times, zone)[0]


# --- Synthetic generator -------------------------------------------------------------------------


def test_same_seed_same_traces_other_seed_other_traces():
    one = synthetic.generate_demand(REGIONS, seed=7, days=1)
    two = synthetic.generate_demand(REGIONS, seed=7, days=1)
    other = synthetic.generate_demand(REGIONS, seed=8, days=1)
    for region in one.values:
        assert np.array_equal(one.values[region], two.values[region])
        assert not np.array_equal(one.values[region], other.values[region])
    spot = [synthetic.generate_spot(["a", "b"], ["h100"], seed=s, days=2) for s in (7, 7, 8)]
    assert all(np.array_equal(spot[0].values[k], spot[1].values[k]) for k in spot[0].values)
    assert any(not np.array_equal(spot[0].values[k], spot[2].values[k]) for k in spot[0].values)


def test_a_region_trace_does_not_depend_on_the_other_regions():
    alone = synthetic.generate_demand(REGIONS[:1], days=1)
    together = synthetic.generate_demand(REGIONS, days=1)
    assert np.array_equal(alone.values["ap-south-1"], together.values["ap-south-1"])
    spot_alone = synthetic.generate_spot(["ap-south-1"], ["h100"], days=2)
    spot_together = synthetic.generate_spot(["ap-south-1", "eu-west-2"], ["h100", "a100"], days=2)
    assert np.array_equal(spot_alone.values[("ap-south-1", "h100")], spot_together.values[("ap-south-1", "h100")])


def test_the_cli_writes_the_same_bytes_twice(tmp_path):
    args = ["--days", "1", "--step-seconds", "300", "--regions", "x:Asia/Tokyo", "--seed", "3"]
    assert synthetic.main(["--out", str(tmp_path / "a"), *args]) == 0
    assert synthetic.main(["--out", str(tmp_path / "b"), *args]) == 0
    for name in ("demand.csv", "spot.csv", "prices.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_daily_shape_is_baseline_at_night_and_peaks_mid_busy_hours():
    hours = np.arange(0, 24, 0.25)
    shape = synthetic.daily_shape(hours, 9, 21)
    assert shape.max() == pytest.approx(1.0)
    assert hours[shape.argmax()] == 15.0
    assert np.all(shape[(hours < 7.5) | (hours >= 22.5)] == 0)
    assert np.all(shape[(hours >= 10) & (hours <= 20)] >= synthetic.HUMP_FLOOR - 1e-9)
    wrapped = synthetic.daily_shape(hours, 18, 2)  # busy hours past midnight
    assert hours[wrapped.argmax()] == 22.0 and wrapped[hours == 10].item() == 0


def test_weekday_peaks_at_the_middle_of_each_regions_local_busy_hours():
    # 2024-05-13 is a Monday; no noise, so the maximum is exactly at 15:00 local time.
    series = synthetic.generate_demand(REGIONS, start="2024-05-13T00:00:00Z", days=1, noise=0.0)
    expected = {"ap-south-1": _at("2024-05-13T09:30:00Z"), "eu-west-2": _at("2024-05-13T14:00:00Z")}
    for region, values in series.values.items():
        assert series.times[int(values.argmax())] == expected[region]
        assert values.max() == pytest.approx(30000.0)
        assert values.min() == pytest.approx(6000.0)


def test_noisy_hourly_peaks_fall_in_local_busy_hours_every_day():
    series = synthetic.generate_demand(REGIONS, days=3)  # the bundled traces' defaults, noise included
    for region, values in series.values.items():
        hours = _local_hours(series, region)
        busy = (hours >= 9) & (hours < 21)
        assert values[busy].mean() > 3 * values[~busy].mean()
        for day in range(3):
            hourly = values[day * 1440 : (day + 1) * 1440].reshape(24, 60).mean(axis=1)
            peak_hour_local = hours[day * 1440 + int(hourly.argmax()) * 60]
            assert 9 <= peak_hour_local < 21, (region, day, peak_hour_local)


def test_london_peak_moves_an_hour_earlier_in_utc_across_the_march_dst_change():
    # Europe/London goes from GMT to BST at 2024-03-31T01:00:00Z; Asia/Kolkata has no DST.
    series = synthetic.generate_demand(REGIONS, start="2024-03-29T00:00:00Z", days=4, noise=0.0)
    daily = {region: values.reshape(4, 1440) for region, values in series.values.items()}
    london_peaks = [int(day.argmax()) // 60 for day in daily["eu-west-2"]]
    assert london_peaks == [15, 15, 14, 14]  # 15:00 local = 15:00 UTC (GMT), then 14:00 UTC (BST)
    india_peaks = [int(day.argmax()) for day in daily["ap-south-1"]]
    assert india_peaks == [9 * 60 + 30] * 4
    # Local busy hours keep their place on the local clock, DST or not.
    hours = _local_hours(series, "eu-west-2")
    peak_local = [hours[d * 1440 + int(daily["eu-west-2"][d].argmax())] for d in range(4)]
    assert peak_local == [15.0] * 4


def test_weekends_are_quieter_above_the_baseline():
    series = synthetic.generate_demand(REGIONS[:1], start="2024-05-11T00:00:00Z", days=3, noise=0.0)
    values = series.values["ap-south-1"].reshape(3, 1440)  # Saturday, Sunday, Monday (UTC, all local too at 15:00)
    assert values[0].max() == pytest.approx(6000 + 0.6 * 24000)
    assert values[1].max() == pytest.approx(6000 + 0.6 * 24000)
    assert values[2].max() == pytest.approx(30000)


def test_spot_outages_are_present_and_otherwise_availability_is_high():
    spot = synthetic.generate_spot(["a", "b", "c"], ["h100", "a100"], days=3, normal_gpus=64, low_gpus=8)
    for key, values in spot.values.items():
        assert set(np.unique(values).tolist()) <= {0, 8, 64}, key
        assert (values == 0).any(), key  # the first outage is always total
        assert np.mean(values == 64) > 0.6, key
    assert np.mean([np.mean(values == 64) for values in spot.values.values()]) > 0.85
    assert any((values == 8).any() for values in spot.values.values())
    # Even a short trace with a low outage rate gets an outage.
    short = synthetic.generate_spot(["a"], ["h100"], days=0.25, outages_per_day=0.01)
    assert (short.values[("a", "h100")] == 0).any()


def test_prices_are_constant_except_one_mid_trace_spot_change():
    rows = synthetic.generate_prices(["a", "b"], ["h100"], days=2, step_seconds=60)
    start, middle = _at("2024-05-12T00:00:00Z"), _at("2024-05-13T00:00:00Z")
    assert [r.timestamp for r in rows].count(start) == 6
    changes = [r for r in rows if r.timestamp != start]
    assert [(r.timestamp, r.capacity_type) for r in changes] == [(middle, "spot"), (middle, "spot")]
    for change in changes:
        before = next(r for r in rows if (r.timestamp, r.region, r.capacity_type) == (start, change.region, "spot"))
        assert change.usd_per_gpu_hour == pytest.approx(1.5 * before.usd_per_gpu_hour, rel=1e-3)
    for region in ("a", "b"):
        by_type = {r.capacity_type: r.usd_per_gpu_hour for r in rows if r.region == region and r.timestamp == start}
        assert by_type["spot"] < by_type["committed"] < by_type["on-demand"]


def test_bad_arguments_are_reported(capsys):
    assert synthetic.main(["--out", "unused", "--regions", "x:Not/AZone"]) == 2
    assert "unknown time zone" in capsys.readouterr().err
    assert synthetic.main(["--out", "unused", "--regions", "x:UTC", "--step-seconds", "7"]) == 2
    assert "whole number" in capsys.readouterr().err
    with pytest.raises(tracefmt.TraceError):
        synthetic.parse_busy_hours("9-8")  # a 23-hour day leaves no night for the ramps


def test_the_bundled_traces_are_what_their_readme_command_makes(tmp_path):
    readme = (BUNDLED / "README.md").read_text()
    command = readme.split("```sh\n", 1)[1].split("```", 1)[0].replace("\\\n", " ").split()
    assert command[:2] == [".venv/bin/python", "hack/traces/synthetic.py"]
    args = command[2:]
    args[args.index("--out") + 1] = str(tmp_path)
    assert synthetic.main(args) == 0
    for name in ("demand.csv", "spot.csv", "prices.csv"):
        assert (tmp_path / name).read_bytes() == (BUNDLED / name).read_bytes(), name


def test_the_bundled_traces_read_back_in_the_documented_format():
    unit, demand = tracefmt.read_demand(BUNDLED / "demand.csv")
    spot = tracefmt.read_spot(BUNDLED / "spot.csv")
    prices = tracefmt.read_prices(BUNDLED / "prices.csv")
    assert unit == "tokens_per_second" and len(demand) == 2 * 3 * 1440
    assert {r.region for r in demand} == {"ap-south-1", "eu-west-2"} == {s.region for s in spot}
    assert {p.capacity_type for p in prices} == set(tracefmt.CAPACITY_TYPES)
    grid = sorted({r.timestamp for r in demand})
    held = tracefmt.spot_on_grid(spot, grid)
    assert all((values == 0).any() and values.max() == 64 for values in held.values())
    assert sum(p.stat().st_size for p in BUNDLED.iterdir()) < 2_000_000


# --- The format ----------------------------------------------------------------------------------


def test_csv_round_trip_with_change_only_spot_rows(tmp_path):
    times = tracefmt.time_grid(_at("2024-01-01T00:00:00Z"), 4, 60)
    demand = tracefmt.DemandSeries(times, {"r": np.array([1.5, 2.0, 2.25, 0.0])})
    spot = tracefmt.SpotSeries(times, {("r", "h100"): np.array([8, 8, 0, 8])})
    tracefmt.write_demand(tmp_path / "demand.csv", tracefmt.demand_rows(demand), unit="requests_per_second")
    tracefmt.write_spot(tmp_path / "spot.csv", tracefmt.spot_rows(spot))
    assert (tmp_path / "demand.csv").read_text().splitlines()[:3] == [
        "timestamp,region,requests_per_second",
        "2024-01-01T00:00:00Z,r,1.5",
        "2024-01-01T00:01:00Z,r,2",
    ]
    unit, rows = tracefmt.read_demand(tmp_path / "demand.csv")
    assert unit == "requests_per_second" and [r.value for r in rows] == [1.5, 2.0, 2.25, 0.0]
    spot_rows = tracefmt.read_spot(tmp_path / "spot.csv")
    assert [(r.timestamp.minute, r.available_gpus) for r in spot_rows] == [(0, 8), (2, 0), (3, 8)]
    assert tracefmt.spot_on_grid(spot_rows, times)[("r", "h100")].tolist() == [8, 8, 0, 8]
    assert len(tracefmt.spot_rows(spot, every_step=True)) == 4


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("timestamp,region,tokens\n", "header"),
        ("timestamp,region,tokens_per_second\n2024-01-01T00:00:00+01:00,r,1\n", "not in UTC"),
        ("timestamp,region,tokens_per_second\n2024-01-01T00:01:00Z,r,1\n2024-01-01T00:00:00Z,r,1\n", "sorted"),
        ("timestamp,region,tokens_per_second\n2024-01-01T00:00:00Z,r,-1\n", ">= 0"),
    ],
)
def test_readers_reject_what_breaks_the_format(tmp_path, content, message):
    (tmp_path / "demand.csv").write_text(content)
    with pytest.raises(tracefmt.TraceError, match=message):
        tracefmt.read_demand(tmp_path / "demand.csv")


# --- Converter: pure functions -------------------------------------------------------------------


def test_resample_mean_averages_whole_steps_and_drops_a_partial_tail():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0])
    assert convert.resample_mean(values, 10, 30).tolist() == [2.0, 5.0]
    assert convert.resample_mean(values, 10, 10).tolist() == values.tolist()
    with pytest.raises(tracefmt.TraceError):
        convert.resample_mean(values, 10, 25)


def test_fold_half_bins_joins_the_first_and_last_half_bins_of_a_whole_day_trace():
    counts = np.array([3.0] + [10.0] * 8639 + [7.0])  # 00:00:00 .. next 00:00:00 at 10 s
    folded = convert.fold_half_bins(counts, 10)
    assert len(folded) == 8640 and folded[0] == 10.0 and folded.sum() == counts.sum()
    assert convert.fold_half_bins(np.array([1.0, 2.0, 3.0]), 10).tolist() == [1.0, 2.0, 3.0]


def test_zone_offsets_follow_daylight_saving():
    assert convert.zone_offset_seconds("Asia/Kolkata", _at("2024-05-12T00:00:00Z")) == 19800
    assert convert.zone_offset_seconds("Europe/London", _at("2024-01-15T12:00:00Z")) == 0
    assert convert.zone_offset_seconds("Europe/London", _at("2024-05-12T12:00:00Z")) == 3600
    assert convert.zone_offset_seconds("America/New_York", _at("2024-05-12T12:00:00Z")) == -4 * 3600


def test_shift_to_zone_puts_the_reference_local_pattern_on_the_region_local_clock():
    start = _at("2024-05-12T00:00:00Z")
    values = np.arange(48, dtype=float)  # 30-minute samples, one day, value = half-hours since 00:00 UTC
    kolkata = convert.shift_to_zone(values, start, 1800, "Asia/Kolkata", "UTC")
    # At 00:00 UTC it is 05:30 in Kolkata: the region sees what the reference saw at 05:30 UTC (sample 11).
    assert kolkata[0] == 11
    assert kolkata[48 - 11] == 0  # 18:30 UTC = 00:00 local gets the reference's midnight (wrapping)
    assert sorted(kolkata.tolist()) == values.tolist()  # a permutation: nothing lost or duplicated
    london = convert.shift_to_zone(values, start, 1800, "Europe/London", "Europe/London")
    assert np.array_equal(london, values)
    new_york = convert.shift_to_zone(values, start, 1800, "America/New_York", "Europe/London")
    assert new_york[20] == 20 - 10  # EDT is 5 h (10 samples) behind BST


def test_shift_to_zone_follows_a_dst_change_inside_the_trace():
    start = _at("2024-03-30T00:00:00Z")
    values = np.arange(96, dtype=float)  # hourly, four days; London goes to BST at 03-31 01:00 UTC
    shifted = convert.shift_to_zone(values, start, 3600, "Europe/London", "UTC")
    assert shifted[:25].tolist() == values[:25].tolist()  # GMT = UTC
    assert shifted[25:30].tolist() == [26.0, 27.0, 28.0, 29.0, 30.0]  # BST: one hour ahead


def test_region_availability_sums_zones_times_gpus_per_zone():
    zones = [np.array([1, 0, 1, 0]), np.array([1, 1, 0, 0])]
    assert convert.region_availability(zones, 16).tolist() == [32, 16, 16, 0]
    assert convert.region_availability(zones[:1], 8).tolist() == [8, 0, 8, 0]


def test_hold_min_resample_is_unavailable_if_any_overlapping_probe_is():
    probes = np.array([1, 1, 0, 1, 1, 1])  # every 195 s: probe 2 covers [390, 585)
    steps = convert.hold_min_resample(probes, 195, 60, 19)
    assert steps[:6].tolist() == [1, 1, 1, 1, 1, 1]  # [0, 360)
    assert steps[6:10].tolist() == [0, 0, 0, 0]  # [360, 600) all overlap [390, 585)
    assert steps[10:].tolist() == [1] * 9
    hourly = convert.hold_min_resample(probes, 195, 600, 1)
    assert hourly.tolist() == [0]
    assert convert.hold_min_resample(probes, 195, 60, 2, offset_seconds=600).tolist() == [1, 1]
    with pytest.raises(tracefmt.TraceError, match="covers"):
        convert.hold_min_resample(probes, 195, 60, 20)


def test_per_gpu_prices_and_their_fallbacks():
    row = {
        "instance_type": "p5.48xlarge",
        "region": "x",
        "gpu_count": "8",
        "ondemand_usd_hr": "64",
        "spot_min_usd_hr": "8",
        "spot_avg_usd_hr": "",
        "spot_max_usd_hr": "24",
        "reserved_yrTerm1Standard_noUpfront_usd_hr": "",
        "reserved_yrTerm1Convertible_noUpfront_usd_hr": "48",
    }
    prices, notes = convert.per_gpu_prices(row)
    assert prices == {"committed": 6.0, "spot": 2.0, "on-demand": 8.0}
    assert any("reserved_yrTerm1Convertible_noUpfront_usd_hr" in n for n in notes)
    assert any("midpoint" in n for n in notes)
    prices, notes = convert.per_gpu_prices(
        row | {"spot_avg_usd_hr": "12", "reserved_yrTerm1Standard_noUpfront_usd_hr": "40"}
    )
    assert prices == {"committed": 5.0, "spot": 1.5, "on-demand": 8.0} and notes == []
    prices, _ = convert.per_gpu_prices(row | {"spot_min_usd_hr": "", "spot_max_usd_hr": ""})
    assert "spot" not in prices


def test_parse_pairs():
    assert convert.parse_pairs("a:b+c, d:e", convert._zones, "z") == {"a": ["b", "c"], "d": ["e"]}
    assert convert.parse_pairs("x:Europe/London", str, "r") == {"x": "Europe/London"}
    with pytest.raises(tracefmt.TraceError):
        convert.parse_pairs("a:1,a:2", float, "s")
    with pytest.raises(tracefmt.TraceError):
        convert.parse_pairs("a", float, "s")


# --- Converter: end to end on a tiny stand-in for the shared folder ----------------------------


def _tiny_shared(folder: Path) -> None:
    start = dt.datetime(2024, 5, 12, tzinfo=UTC)
    bins = 8640 + 1  # one day of 10-second bins with half-bins at both ends, like the real file
    lines = ["Time,TIMESTAMP"]
    for i in range(bins):
        at = start + dt.timedelta(seconds=10 * i)
        count = 5 if i in (0, bins - 1) else (20 if at.hour == 12 else 10)  # 1 req/s, 2 req/s at 12:00 UTC
        lines.append(f"{at:%Y-%m-%d %H:%M:%S},{count}")
    (folder / convert.AZURE_FILE).write_text("\n".join(lines) + "\n")
    spot = folder / convert.SPOT_FOLDER
    spot.mkdir()
    ticks = 86400 // 195 + 2
    for zone, data in {"za": [1] * ticks, "zb": [1] * 100 + [0] * 50 + [1] * (ticks - 150)}.items():
        (spot / f"{zone}_v100_1.json").write_text(json.dumps({"metadata": {"gap_seconds": 195}, "data": data}))
    header = "instance_type,gpu_count,region,ondemand_usd_hr,spot_min_usd_hr,spot_avg_usd_hr,spot_max_usd_hr,"
    header += ",".join(convert.COMMITTED_COLUMNS)
    blanks = "," * (len(convert.COMMITTED_COLUMNS) - 1)
    (folder / convert.PRICES_FILE).write_text(f"{header}\np5.48xlarge,8,aws-x,80,8,16,24,40{blanks}\n")


def test_convert_end_to_end_on_a_tiny_shared_folder(tmp_path, capsys):
    shared, out = tmp_path / "shared", tmp_path / "out"
    shared.mkdir()
    _tiny_shared(shared)
    argv = ["--shared", str(shared), "--out", str(out), "--regions", "in:Asia/Kolkata,uk:Europe/London"]
    argv += ["--spot-zones", "in:za+zb,uk:zb", "--instance-type", "p5.48xlarge", "--days", "1"]
    argv += ["--region-map", "in:aws-x,uk:aws-x", "--scale", "uk:0.5", "--step-seconds", "300"]
    assert convert.main(argv) == 0, capsys.readouterr().err
    unit, demand = tracefmt.read_demand(out / "demand.csv")
    assert unit == "tokens_per_second" and len(demand) == 2 * 288
    series = {r: np.array([d.value for d in demand if d.region == r]) for r in ("in", "uk")}
    # 250 tokens per request; the 12:00 UTC busy hour lands at 12:00 local (06:30 UTC in India, 11:00 UTC in the UK).
    assert series["in"][78:90].tolist() == [500.0] * 12 and series["in"][77] == 250.0
    assert series["uk"][132:144].tolist() == [250.0] * 12 and series["uk"].min() == 125.0
    spot = tracefmt.read_spot(out / "spot.csv")
    held = tracefmt.spot_on_grid(spot, sorted({d.timestamp for d in demand}))
    assert held[("in", "h100")].max() == 32 and held[("in", "h100")].min() == 16
    assert held[("uk", "h100")].min() == 0
    prices = {p.capacity_type: p.usd_per_gpu_hour for p in tracefmt.read_prices(out / "prices.csv")}
    assert prices == {"committed": 5.0, "spot": 2.0, "on-demand": 10.0}
    assert convert.main([*argv[:4], "--regions", "in:Asia/Kolkata", "--spot-zones", "in:nope", *argv[8:10]]) == 2
    assert "zone nope" in capsys.readouterr().err
