"""A reload (SIGHUP) says which file it read and what changed, and says so when nothing could."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.e2e.conftest import ShelverFactory
from tests.e2e.test_cli import genre_buckets
from tests.support.aws import Stack, wait_until


def test_a_reload_logs_the_file_and_the_settings_that_changed(
        stack: Stack, shelver_factory: ShelverFactory, run_dir: Path) -> None:
    config = run_dir / "shelver.conf"
    config.write_text(f"GENRE_BUCKETS={genre_buckets(stack.buckets)}\nCONSUMERS=2\n")
    shelver = shelver_factory(stack, SHELVER_CONFIG_FILE=str(config))
    shelver.wait_healthy()
    config.write_text(f"GENRE_BUCKETS={genre_buckets(stack.buckets)}\nCONSUMERS=3\n"
                      "LOG_LEVEL=DEBUG\n")
    shelver.signal(signal.SIGHUP)
    wait_until(lambda: len(shelver.consumer_pids()) == 3, 60, 0.3, "three consumers")
    log = shelver.log()
    assert (f"shelver: reload read SHELVER_CONFIG_FILE={config}; changed: CONSUMERS 2 -> 3; "
            "LOG_LEVEL INFO -> DEBUG") in log
    assert "consumer pool: reloading 2 consumer(s), 3 after" in log

    shelver.signal(signal.SIGHUP)
    wait_until(lambda: f"SHELVER_CONFIG_FILE={config}; nothing changed; consumers replaced"
               in shelver.log(), 60, 0.3, "the second reload's line")


def test_a_reload_without_a_config_file_says_nothing_can_change(
        stack: Stack, shelver_factory: ShelverFactory) -> None:
    shelver = shelver_factory(stack)
    shelver.wait_healthy()
    shelver.signal(signal.SIGHUP)
    wait_until(lambda: "shelver: reload without SHELVER_CONFIG_FILE: the environment is read "
               "once, at start, so the settings are the same" in shelver.log(), 60, 0.3,
               "the reload's warning")
