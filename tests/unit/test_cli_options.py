"""Each component's command-line options are generated from its settings model: every setting has an
option, every default shown is the model's, and a bad value exits 2 with one line naming the option."""

from __future__ import annotations

import pytest
import typer
from pydantic import BaseModel
from typer.testing import CliRunner

from headway.api.options import Parser, settings_command
from headway.autoscaler.cli import app as autoscaler_app
from headway.autoscaler.config import AutoscalerConfig
from headway.gateway.cli import app as gateway_app
from headway.gateway.config import GatewayConfig
from headway.kvcache.cli import app as kvcache_app
from headway.kvcache.config import KvCacheConfig
from headway.operator.cli import app as operator_app
from headway.operator.config import OperatorConfig

COMMANDS = [
    pytest.param(gateway_app, GatewayConfig, {"timeouts": "timeout"}, id="gateway"),
    pytest.param(autoscaler_app, AutoscalerConfig, {}, id="autoscaler"),
    pytest.param(operator_app, OperatorConfig, {}, id="operator"),
    pytest.param(kvcache_app, KvCacheConfig, {}, id="kvcache"),
]


def _settings_params(model: type[BaseModel], prefixes: dict[str, str]) -> set[str]:
    out = set()
    for name, info in model.model_fields.items():
        nested = info.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel) and name in prefixes:
            out |= {f"{prefixes[name]}_{sub}" for sub in nested.model_fields}
        else:
            out.add(name)
    return out


@pytest.mark.parametrize(("app", "model", "prefixes"), COMMANDS)
def test_every_setting_is_an_option_with_the_models_default(
    app: typer.Typer, model: type[BaseModel], prefixes: dict[str, str]
) -> None:
    command = typer.main.get_command(app)
    params = {p.name: p for p in command.params}
    assert _settings_params(model, prefixes) <= set(params)
    for name, info in model.model_fields.items():
        if name in params and not info.is_required() and not isinstance(info.default, tuple):
            default = info.get_default(call_default_factory=True)
            if isinstance(default, (str, int, float)) and default != "":
                assert f"(default: {default})" in (params[name].help or ""), name
            assert params[name].default is None, f"{name}: the model, not the CLI, holds the default"


@pytest.mark.parametrize(
    ("app", "args", "message"),
    [
        pytest.param(
            gateway_app,
            ["--model", "m", "-e", "http://x:1", "--timeout-idle-s", "0"],
            "--timeout-idle-s: ",
            id="nested",
        ),
        pytest.param(
            gateway_app, ["--model", "m", "-e", "http://x:1", "--weights", "prefix"], "--weights prefix: ", id="parser"
        ),
        pytest.param(
            gateway_app, ["--model", "m", "-e", "http://x:1", "--max-in-flight", "0"], "--max-in-flight: ", id="bound"
        ),
        pytest.param(gateway_app, ["--discovery", "static"], "static discovery needs --model", id="cross-field"),
        pytest.param(
            gateway_app,
            ["--model", "m", "-e", "http://x:1", "--mode", "epp", "--workers", "2"],
            "--workers applies to proxy mode",
            id="epp-workers",
        ),
        pytest.param(gateway_app, ["--model", "m", "-e", "http://x:1", "--mode", "sidecar"], "--mode: ", id="mode"),
        pytest.param(autoscaler_app, ["--interval-s", "5"], "--profiles: Field required", id="required"),
        pytest.param(
            kvcache_app, ["--bind", "tcp://127.0.0.1:1", "--redis-url", "r", "--port", "0"], "--port: ", id="port"
        ),
    ],
)
def test_a_bad_option_exits_2_with_one_line_naming_it(app: typer.Typer, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.output


def test_a_field_no_flag_can_spell_must_come_with_a_parser() -> None:
    class Odd(BaseModel):
        table: dict[str, int] = {}

    with pytest.raises(TypeError, match="needs a Parser"):
        settings_command(Odd, lambda cfg: None, name="odd", doc="")
    made: list[Odd] = []
    cmd = settings_command(Odd, made.append, name="odd", doc="", parsers={"table": Parser(lambda t: {t: 1}, "KEY")})
    app = typer.Typer()
    app.command()(cmd)
    assert CliRunner().invoke(app, ["--table", "k"]).exit_code == 0
    assert made == [Odd(table={"k": 1})]
