"""The `trustgate` flags against the settings dataclasses, which are the only copy of the defaults:
no option gives exactly the dataclass defaults, every flag reaches its field, the environment
stands in where it did before, and the help text shows the defaults the dataclasses hold."""

from __future__ import annotations

import argparse
import dataclasses
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attestation.agent.settings import AgentSettings
from attestation.cli import agent, verifier, webhook
from attestation.cli.common import UsageError, default_of, native
from attestation.cli.main import build_parser, main
from attestation.core.signing import (
    generate_private_key,
    load_public_key_pem,
    public_key_to_pem,
    public_keys_by_id,
)
from attestation.verifier.settings import VerifierSettings
from webhook.certpolicy import CertPolicy
from webhook.settings import (
    DEFAULT_SERVICE_NAME,
    SelfTlsSettings,
    WebhookSettings,
)

SERVICE = f"{DEFAULT_SERVICE_NAME}.{default_of(SelfTlsSettings, 'namespace')}.svc"


def _parse(*argv: str) -> Any:
    return build_parser().parse_args(argv)


@pytest.fixture
def verifier_key(tmp_path: Path) -> Path:
    path = tmp_path / "verifier.pub"
    path.write_bytes(public_key_to_pem(generate_private_key().public_key()))
    return path


def _keys(path: Path) -> Any:
    return public_keys_by_id([load_public_key_pem(path.read_bytes())])


@pytest.fixture
def serving_pair(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("cert")
    key.write_text("key")
    return cert, key


# -- no options: the dataclass defaults -------------------------------------------------------


def test_agent_without_options_has_the_dataclass_defaults() -> None:
    settings = agent.settings_from(_parse("agent", "--node", "worker-1"), {})
    assert settings == AgentSettings(node_name="worker-1")


def test_verifier_without_options_has_the_dataclass_defaults() -> None:
    settings = verifier.settings_from(_parse("verifier"), {})
    # The replica's identity falls back to the host name, as it always did.
    assert settings == VerifierSettings(identity=socket.gethostname())


def test_webhook_without_options_has_the_dataclass_defaults(
    verifier_key: Path, serving_pair: tuple[Path, Path]
) -> None:
    cert, key = serving_pair
    args = _parse("webhook", "--verifier-key", str(verifier_key),
                  "--tls-cert", str(cert), "--tls-key", str(key))  # fmt: skip
    assert webhook.settings_from(args, {}) == WebhookSettings(
        _keys(verifier_key), tls_cert_file=str(cert), tls_key_file=str(key)
    )


def test_webhook_self_signed_tls_without_options_has_the_dataclass_defaults(
    verifier_key: Path,
) -> None:
    args = _parse("webhook", "--verifier-key", str(verifier_key), "--self-signed-tls")
    expected_tls = SelfTlsSettings(CertPolicy((SERVICE, f"{SERVICE}.cluster.local")))
    assert webhook.settings_from(args, {}) == WebhookSettings(
        _keys(verifier_key), self_tls=expected_tls
    )


# -- every flag reaches its field -------------------------------------------------------------


def test_every_verifier_flag_reaches_its_field() -> None:
    argv = [
        "verifier", "--agents", "n1=https://a:1", "--node-selector", "x=y", "--agent-port", "1",
        "--policies", "/p", "--ek-ca", "/ca.pem", "--signing-key", "/k.pem", "--audit-log", "/a",
        "--interval", "0.5", "--max-age", "1", "--agent-timeout", "0.1", "--concurrency", "2",
        "--remediation", "annotate-only", "--eviction-deadline", "1", "--eviction-grace", "2",
        "--untrusted-node-action",
        "none", "--unknown-grace", "1", "--listen", "127.0.0.1:1", "--tls-cert", "/c",
        "--tls-key", "/k", "--namespace", "ns", "--identity", "me", "--no-sharding",
        "--lease-duration", "1", "--non-nf-pods", "host-policy",
        "--audit-max-bytes", "1", "--audit-checkpoint-interval", "1",
        "--agent-client-cert", "/vc", "--agent-client-key", "/vk", "--push-rate", "1",
        "--push-burst", "2", "--cluster-id", "c1", "--advertise-url", "http://10.0.0.1:1",
        "--evict-on-unknown", "--enforcement-default", "audit",
    ]  # fmt: skip
    settings = verifier.settings_from(_parse(*argv), {})
    defaults = VerifierSettings()
    untouched = {"refresh", "lease_name", "log_column_size", "native"}
    for field in dataclasses.fields(VerifierSettings):
        if field.name not in untouched:
            assert getattr(settings, field.name) != getattr(defaults, field.name), field.name
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 1)
    assert settings.ek_ca_bundle == Path("/ca.pem")
    assert settings.sharding is False


def test_every_agent_flag_reaches_its_field() -> None:
    argv = [
        "agent", "--node", "n1", "--tcti", "swtpm:port=1", "--ek-alg", "ecc", "--ima-log", "/l",
        "--state-dir", "/s", "--host", "127.0.0.1", "--port", "1", "--tls-cert", "/c",
        "--tls-key", "/k", "--notify-url", "https://v/v1/notify", "--watch-interval", "1",
        "--page-bytes", "2097152", "--log-column-size", "32", "--client-ca", "/ca",
        "--tpm-queue", "1",
    ]  # fmt: skip
    settings = agent.settings_from(_parse(*argv), {})
    defaults = AgentSettings(node_name="")
    for field in dataclasses.fields(AgentSettings):
        if field.name != "max_body_bytes":
            assert getattr(settings, field.name) != getattr(defaults, field.name), field.name


def test_every_self_tls_flag_reaches_its_field(verifier_key: Path) -> None:
    args = _parse(
        "webhook", "--verifier-key", str(verifier_key), "--self-signed-tls",
        "--tls-secret", "s", "--tls-namespace", "ns", "--service-name", "svc",
        "--webhook-configuration", "wc", "--tls-dns-san", "extra.example",
        "--tls-ip-san", "127.0.0.1", "--tls-ca-validity", "100d", "--tls-ca-renew-before", "50d",
        "--tls-validity", "20d", "--tls-renew-before", "10d", "--tls-check-interval", "30s",
        "--verifier-username", "u", "--audit-namespace", "a", "--host", "127.0.0.1",
        "--port", "1", "--allow-ephemeral-containers", "--enforcement-default", "warn",
    )  # fmt: skip
    settings = webhook.settings_from(args, {})
    assert settings.enforcement_default == "warn"
    assert (settings.verifier_username, settings.host, settings.port) == ("u", "127.0.0.1", 1)
    assert settings.allow_ephemeral_containers is True
    assert settings.audit_namespaces == frozenset({"a"})
    tls = settings.self_tls
    assert tls is not None
    assert (tls.secret_name, tls.namespace, tls.webhook_configuration) == ("s", "ns", "wc")
    assert tls.check_interval_seconds == 30
    assert tls.policy.dns_names == ("svc.ns.svc", "svc.ns.svc.cluster.local", "extra.example")
    assert tls.policy.ip_addresses == ("127.0.0.1",)
    policy = tls.policy
    lifetimes = (policy.ca_validity, policy.ca_renew_before, policy.serving_validity,
                 policy.serving_renew_before)  # fmt: skip
    assert [t.days for t in lifetimes] == [100, 50, 20, 10]


# -- the environment stands in for flags not given --------------------------------------------


def test_agent_takes_node_tcti_and_notify_url_from_the_environment() -> None:
    env = {"NODE_NAME": "w1", "TRUSTGATE_TCTI": "swtpm:port=2321", "TRUSTGATE_NOTIFY_URL": "u"}
    settings = agent.settings_from(_parse("agent"), env)
    assert (settings.node_name, settings.tcti, settings.notify_url) == (
        "w1",
        "swtpm:port=2321",
        "u",
    )
    flagged = agent.settings_from(_parse("agent", "--node", "w2", "--tcti", "t"), env)
    assert (flagged.node_name, flagged.tcti) == ("w2", "t")


def test_verifier_takes_namespace_and_identity_from_the_environment() -> None:
    env = {"POD_NAMESPACE": "tg", "POD_NAME": "verifier-0"}
    settings = verifier.settings_from(_parse("verifier"), env)
    assert (settings.namespace, settings.identity) == ("tg", "verifier-0")
    flagged = verifier.settings_from(_parse("verifier", "--namespace", "x", "--identity", "y"), env)
    assert (flagged.namespace, flagged.identity) == ("x", "y")


def test_webhook_takes_the_tls_namespace_from_the_environment(verifier_key: Path) -> None:
    args = _parse("webhook", "--verifier-key", str(verifier_key), "--self-signed-tls")
    tls = webhook.settings_from(args, {"POD_NAMESPACE": "tg"}).self_tls
    assert tls is not None
    assert tls.namespace == "tg"
    assert tls.policy.dns_names[0] == f"{DEFAULT_SERVICE_NAME}.tg.svc"


def test_pure_python_is_asked_for_with_exactly_1() -> None:
    assert native({}) is True
    assert native({"TRUSTGATE_PURE_PYTHON": "0"}) is True
    assert native({"TRUSTGATE_PURE_PYTHON": "1"}) is False


def test_the_verifier_passes_pure_python_into_its_settings() -> None:
    settings = verifier.settings_from(_parse("verifier"), {"TRUSTGATE_PURE_PYTHON": "1"})
    assert settings.native is False
    assert verifier.settings_from(_parse("verifier"), {}).native is True


# -- unusable options: one line naming the flag -----------------------------------------------


def test_agent_needs_a_node_name() -> None:
    with pytest.raises(UsageError, match="--node"):
        agent.settings_from(_parse("agent"), {})
    with pytest.raises(UsageError, match="--tls-cert and --tls-key"):
        agent.settings_from(_parse("agent", "--node", "n", "--tls-cert", "/c"), {})
    with pytest.raises(UsageError, match="--page-bytes must be between"):
        agent.settings_from(_parse("agent", "--node", "n", "--page-bytes", "4096"), {})


def test_verifier_listen_must_be_host_and_port() -> None:
    with pytest.raises(UsageError, match="--listen must be HOST:PORT"):
        verifier.settings_from(_parse("verifier", "--listen", "8443"), {})


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--self-signed-tls", "--tls-cert", "/c"], "exclude each other"),
        ([], "--tls-cert is required"),
        (["--tls-cert", "/nonexistent/c", "--tls-key", "/k"], "--tls-cert /nonexistent/c does"),
        (["--self-signed-tls", "--tls-validity", "400d"], "TLS: serving_renew_before|TLS: ca_"),
        (["--self-signed-tls", "--tls-ip-san", "not-an-ip"], "TLS: .*not-an-ip"),
    ],
)
def test_webhook_option_conflicts_are_usage_errors(
    verifier_key: Path, extra: list[str], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        webhook.settings_from(_parse("webhook", "--verifier-key", str(verifier_key), *extra), {})


# -- help shows the defaults the dataclasses hold ---------------------------------------------

HELP_DEFAULTS = [
    ("agent", "--tcti", AgentSettings, "tcti"),
    ("agent", "--port", AgentSettings, "port"),
    ("agent", "--state-dir", AgentSettings, "state_dir"),
    ("agent", "--watch-interval", AgentSettings, "watch_interval"),
    ("verifier", "--interval", VerifierSettings, "interval"),
    ("verifier", "--max-age", VerifierSettings, "max_age"),
    ("verifier", "--agent-port", VerifierSettings, "agent_port"),
    ("verifier", "--ek-ca", VerifierSettings, "ek_ca_bundle"),
    ("verifier", "--signing-key", VerifierSettings, "signing_key"),
    ("verifier", "--namespace", VerifierSettings, "namespace"),
    ("verifier", "--remediation", VerifierSettings, "remediation"),
    ("webhook", "--verifier-username", WebhookSettings, "verifier_username"),
    ("webhook", "--port", WebhookSettings, "port"),
    ("webhook", "--tls-secret", SelfTlsSettings, "secret_name"),
    ("webhook", "--tls-namespace", SelfTlsSettings, "namespace"),
]


def _help_of(command: str, flag: str, capsys: pytest.CaptureFixture[str]) -> str:
    """The flag's entry in ``trustgate COMMAND --help``: its line and the help lines below it."""
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    start = next(n for n, line in enumerate(lines) if line.startswith(f"{flag} "))
    entry = [lines[start]]
    for line in lines[start + 1 :]:
        if not line or line.startswith("-"):
            break
        entry.append(line)
    return " ".join(entry)


@pytest.mark.parametrize(("command", "flag", "cls", "field"), HELP_DEFAULTS)
def test_help_shows_the_dataclass_default(
    command: str,
    flag: str,
    cls: type[Any],
    field: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks inside a value
    line = _help_of(command, flag, capsys)
    assert str(default_of(cls, field)) in line.split("(default: ", 1)[-1]


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--tls-ca-validity", default_of(CertPolicy, "ca_validity")),
        ("--tls-ca-renew-before", default_of(CertPolicy, "ca_renew_before")),
        ("--tls-validity", default_of(CertPolicy, "serving_validity")),
        ("--tls-renew-before", default_of(CertPolicy, "serving_renew_before")),
        ("--tls-check-interval", None),
    ],
)
def test_help_shows_durations_as_the_flags_take_them(
    flag: str, value: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")
    line = _help_of("webhook", flag, capsys)
    shown = line.rsplit("default: ", 1)[1].rstrip(")")
    if value is None:
        assert webhook.duration(shown).total_seconds() == default_of(
            SelfTlsSettings, "check_interval_seconds"
        )
    else:
        assert webhook.duration(shown) == value


def test_pure_python_is_in_the_help_of_the_commands_that_check_logs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")
    for argv in (["verifier"], ["verify", "ima"], ["verify", "evidence"]):
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        assert "TRUSTGATE_PURE_PYTHON=1" in capsys.readouterr().out, argv


# -- every flag of every command: help, and its default shown -----------------------------------


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def _entry(text: str, flag: str) -> str:
    """A flag's entry in a rendered help: its line and the help lines below it (indented
    deeper than the flags, which may themselves start with a flag: "--from-log: ...")."""
    lines = text.splitlines()
    start = next(
        n for n, line in enumerate(lines) if line.strip().startswith((f"{flag} ", f"{flag},"))
    )
    entry = [lines[start].strip()]
    for line in lines[start + 1 :]:
        if not line.startswith("   "):  # the next flag ("  -x"), a blank line or a heading
            break
        entry.append(line.strip())
    return " ".join(entry)


def _has_default(action: argparse.Action) -> bool:
    """A default worth showing: a value the command uses when the flag is absent (not None, an
    empty repeatable list, or a switch's off)."""
    default = action.default
    return not (
        default is None or default is argparse.SUPPRESS or default == [] or action.nargs == 0
    )


def test_every_flag_of_every_command_has_help_and_shows_its_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``trustgate ... --help`` documents every flag and argument of every command, and each
    flag that has a default says it (with its value when it is a plain number or word)."""
    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks inside a value
    missing = []
    skip = (argparse._SubParsersAction, argparse._HelpAction, argparse._VersionAction)
    for path, parser in _parsers(build_parser()):
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, skip):
                continue
            where = f"trustgate {' '.join(path)} {'/'.join(action.option_strings) or action.dest}"
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{where}: no help")
            elif action.option_strings and _has_default(action):
                entry = _entry(text, action.option_strings[0])
                plain = isinstance(action.default, str | int | float)
                if "default" not in entry or (plain and str(action.default) not in entry):
                    missing.append(f"{where}: help does not show its default {action.default!r}")
    assert not missing, "\n".join(missing)


# -- the demo outside a source checkout -------------------------------------------------------


@pytest.mark.parametrize("missing", ["attestation.lab", "attestation.lab.demo"])
def test_demo_without_the_lab_is_a_one_line_error(
    missing: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the container image looks like: attestation.lab is not there to import.
    monkeypatch.delitem(sys.modules, "attestation.lab.demo", raising=False)
    monkeypatch.setitem(sys.modules, missing, None)
    assert main(["demo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "attestation.lab" in err[0]
    assert "make demo" in err[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["agent"], "trustgate: agent: --node (or $NODE_NAME) is required"),
        (["verifier", "--listen", "nope"], "trustgate: verifier: --listen must be HOST:PORT"),
        (["webhook", "--verifier-key", "/nonexistent.pem"], "trustgate: webhook: --verifier-key"),
    ],
)
def test_unusable_options_are_one_line_and_exit_2(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message), err
    assert "\n" not in err


def test_the_entry_point_loads_nothing_heavy() -> None:
    """``trustgate --help`` reads the defaults without the cryptography, server, Kubernetes or
    TPM stacks (a fresh interpreter: this test process has them all loaded)."""
    heavy = ("cryptography", "uvicorn", "fastapi", "kubernetes", "tpm2_pytss", "yaml", "asyncio")
    probe = "import sys, attestation.cli.main; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout.split()
    assert [m for m in heavy if m in loaded] == []
