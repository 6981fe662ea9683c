"""--log-format and --log-level of the long-running commands: JSON lines a collector parses
without a pattern, and the level that decides what is written."""

from __future__ import annotations

import json
import logging

import pytest

from attestation.cli.common import setup_logging
from attestation.cli.main import build_parser


@pytest.mark.parametrize(
    "command", [["agent"], ["verifier"], ["webhook", "--verifier-key", "k.pem"]], ids=str
)
def test_every_server_takes_the_logging_flags(command: list[str]) -> None:
    args = build_parser().parse_args([*command, "--log-format", "json", "--log-level", "debug"])
    assert (args.log_format, args.log_level) == ("json", "debug")
    defaults = build_parser().parse_args(command)
    assert (defaults.log_format, defaults.log_level) == ("text", "info")


def test_json_lines_carry_time_level_logger_message_and_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("warning", "json")
    log = logging.getLogger("trustgate.test")
    log.info("not written: below the level")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("round for %s failed", "worker-1")
    (line,) = capsys.readouterr().err.strip().splitlines()
    record = json.loads(line)
    assert record["level"] == "error"
    assert record["logger"] == "trustgate.test"
    assert record["message"] == "round for worker-1 failed"
    assert "ValueError: boom" in record["error"]
    assert record["time"].endswith("+00:00")
    setup_logging()  # back to text for whatever runs next in this process
