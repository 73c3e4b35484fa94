"""Learned spot risk: caps held for a retry window that grows when scarcity persists and shrinks when it passes."""

from __future__ import annotations

import datetime as dt

from sunblend.core import spotrisk

NOON = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)


def test_a_refusal_caps_spot_at_what_the_offer_has_for_the_first_window_only():
    risk = spotrisk.refused(None, NOON, nodes=3, have=2)
    assert risk.cap == 2 and risk.window == spotrisk.REFUSAL_WINDOW
    assert risk.capped(NOON + spotrisk.REFUSAL_WINDOW - MINUTE) == 2
    assert risk.capped(NOON + spotrisk.REFUSAL_WINDOW) is None
    assert risk.refused == 3 and risk.lost == 0


def test_a_loss_holds_spot_back_longer_than_a_refusal():
    risk = spotrisk.lost(None, NOON, nodes=1, have=4)
    assert risk.cap == 4 and risk.window == spotrisk.LOSS_WINDOW > spotrisk.REFUSAL_WINDOW
    assert risk.lost == 1 and risk.refused == 0


def test_a_loss_soon_after_the_retry_doubles_the_window_up_to_the_maximum():
    risk = spotrisk.lost(None, NOON, 1, 0)
    windows = []
    for _ in range(4):
        at = risk.until + MINUTE  # the window ran out; spot was tried again and lost at once
        risk = spotrisk.lost(spotrisk.observe(risk, at, 1, 1), at, 1, 0)
        windows.append(risk.window)
    assert windows == [2 * spotrisk.LOSS_WINDOW] + [spotrisk.MAX_WINDOW] * 3
    assert spotrisk.MAX_WINDOW == 2 * spotrisk.LOSS_WINDOW


def test_refusals_do_not_grow_the_window_asking_again_is_cheap():
    risk = spotrisk.refused(None, NOON, 1, 0)
    for _ in range(5):
        at = risk.until + MINUTE
        risk = spotrisk.refused(spotrisk.observe(risk, at, 0, 1), at, 1, 0)
        assert risk.until == at + spotrisk.REFUSAL_WINDOW
    assert 5.5 < risk.refused < 6  # six refusals over 96 minutes, decaying with a one-day half-life


def test_quiet_windows_after_the_retry_halve_the_window_back():
    risk = spotrisk.lost(None, NOON, 1, 0)
    at = risk.until + MINUTE
    risk = spotrisk.lost(spotrisk.observe(risk, at, 1, 1), at, 1, 0)
    assert risk.window == spotrisk.MAX_WINDOW
    risk = spotrisk.observe(risk, risk.until + spotrisk.MAX_WINDOW, 2, 0)  # a whole window quiet after the retry
    assert risk.window == spotrisk.LOSS_WINDOW
    again = spotrisk.lost(risk, risk.until + dt.timedelta(hours=3), 1, 2)
    assert again.window == spotrisk.LOSS_WINDOW  # a loss long after the retry: the window as learned


def test_counts_decay_with_the_half_life_and_give_the_rates():
    risk = spotrisk.observe(None, NOON, running=0, asked=10)
    risk = spotrisk.refused(risk, NOON, nodes=4, have=6)
    assert risk.granted_ratio == 0.6
    risk = spotrisk.observe(risk, NOON + dt.timedelta(hours=10), running=6, asked=0)  # 6 nodes for 10 h
    risk = spotrisk.lost(risk, NOON + dt.timedelta(hours=10), nodes=3, have=3)
    assert 0.04 < risk.losses_per_node_hour < 0.06  # (3 + 0.1) / (60 x decay + 5)
    later = spotrisk.observe(risk, NOON + dt.timedelta(hours=10) + spotrisk.HALF_LIFE, running=0, asked=0)
    assert abs(later.lost - risk.lost / 2) < 1e-9 and abs(later.asked - risk.asked / 2) < 1e-9
