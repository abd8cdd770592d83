from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from exporter_api.cli import main
from exporter_api.config import Settings, default_config_path, load_config
from exporter_api.errors import ConfigError
from exporter_api.security.passwords import verify_password

DEMO = default_config_path()


def test_demo_config_matches_the_contract() -> None:
    config = load_config(DEMO)
    db = config.database("db-test")
    assert db is not None
    assert db.provider == "sqlite"
    assert {u.login for u in db.users} == {"USER1", "USER2"}
    assert [s.id for s in config.manager("m1").streams] == ["s1", "s2"]  # type: ignore[union-attr]
    assert [s.id for s in config.manager("m2").streams] == ["s3"]  # type: ignore[union-attr]
    profile = config.profile("orders_cols")
    assert profile is not None
    assert {(i.id, i.label) for i in profile.items} >= {
        ("order_id", "OrderId"),
        ("customer", "Customer"),
    }
    sales = config.group("g-sales")
    assert sales is not None
    orders = sales.scripts[0]
    assert (orders.id, orders.execution_lane, orders.columns_profile_id) == (
        "s-orders",
        0,
        "orders_cols",
    )
    assert [v.index for v in orders.variants] == [1, 2, 3]
    assert len({s.execution_lane for s in sales.scripts}) >= 3
    for variant in orders.variants:
        assert ":manager_id" in variant.sql
        assert ":stream_id" in variant.sql
    assert config.group("g-big") is not None


def _copy_demo(tmp_path: Path) -> Path:
    target = tmp_path / "demo"
    shutil.copytree(DEMO.parent, target)
    return target / "exporter.toml"


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.mark.parametrize(
    ("old", "new", "entry", "problem"),
    [
        (
            '"sql/orders_v2.sql"',
            '"sql/missing.sql"',
            "groups[g-sales].scripts[s-orders].variants[2]",
            "does not exist",
        ),
        (
            'columns_profile_id = "orders_cols"',
            'columns_profile_id = "nope"',
            "groups[g-sales].scripts[s-orders]",
            "'nope' is not defined",
        ),
        (
            "execution_lane = 0",
            'execution_lane = "zero"',
            "groups[g-sales].scripts[s-orders].execution_lane",
            "Expected `int`, got `str`",
        ),
        ('dsn = "demo/db-test.sqlite3"', 'dsn = ""', "databases[db-test].dsn", "must not be empty"),
        ('id = "m2"', 'id = "m1"', "managers[m1]", "duplicate id"),
        ('encoding = "utf-8"', 'encoding = "latin1"', "output.encoding", "Invalid enum value"),
        ('delimiter = ","', 'delimiter = ";;"', "output.delimiter", "one character"),
        ('format = "csv"', 'format = "pdf"', "output.format", "Invalid enum value 'pdf'"),
        ("max_rows_per_file = 0", "max_rows_per_file = -1", "output.max_rows_per_file", "0 (no"),
        ("gzip_level = 1", "gzip_level = 10", "output.gzip_level", "from 1 to 9"),
        (
            'output_profile = "excel-ru"',
            'output_profile = "excel"',
            "groups[g-sales].scripts[s-payments]",
            "output_profile 'excel' is not defined",
        ),
        (
            'delimiter = ";"',
            'delimiter = ","',
            "output.profiles[excel-ru].delimiter",
            "must differ from the decimal separator",
        ),
        (
            'hub_path = "/hubs/runs"',
            'hub_path = "/hubs/runs"\nsecret = 1',
            "server",
            "unknown field `secret`",
        ),
    ],
)
def test_errors_name_file_entry_and_problem(
    tmp_path: Path, old: str, new: str, entry: str, problem: str
) -> None:
    path = _copy_demo(tmp_path)
    _edit(path, old, new)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.file == str(path)
    assert info.value.entry == entry
    assert problem in info.value.problem
    assert str(path) in str(info.value)


def test_unknown_sql_parameter_is_refused(tmp_path: Path) -> None:
    path = _copy_demo(tmp_path)
    (path.parent / "sql" / "orders_v1.sql").write_text("SELECT :password FROM t", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) :password"):
        load_config(path)


def test_postgres_dsn_with_credentials_is_refused(tmp_path: Path) -> None:
    path = _copy_demo(tmp_path)
    _edit(
        path,
        "# --- managers",
        '[[databases]]\nid = "pg"\ndisplay_name = "PG"\n'
        'provider = "postgres"\ndsn = "postgresql://app:s3cret@db:5432/x"\n\n# --- managers',
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.entry == "databases[pg].dsn"
    assert "s3cret" not in info.value.problem


def test_oracle_dsn_with_credentials_is_refused(tmp_path: Path) -> None:
    path = _copy_demo(tmp_path)
    _edit(
        path,
        "# --- managers",
        '[[databases]]\nid = "ora"\ndisplay_name = "O"\n'
        'provider = "oracle"\ndsn = "scott/tiger@db:1521/XE"\n\n# --- managers',
    )
    with pytest.raises(ConfigError, match="without credentials"):
        load_config(path)


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(DEMO)]) == 0
    assert "ok (1 databases, 2 managers, 2 groups, 4 scripts)" in capsys.readouterr().out
    path = _copy_demo(tmp_path)
    _edit(path, 'columns_profile_id = "orders_cols"', 'columns_profile_id = "nope"')
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err
    assert "groups[g-sales].scripts[s-orders]" in err


def test_cookie_secure_defaults() -> None:
    assert not Settings(DEMO, host="127.0.0.1").cookie_secure
    assert Settings(DEMO, host="0.0.0.0").cookie_secure  # noqa: S104
    assert not Settings(DEMO, host="0.0.0.0", insecure_cookies=True).cookie_secure  # noqa: S104


def test_hash_password_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    assert main(["hash-password"]) == 0
    encoded = capsys.readouterr().out.strip()
    assert verify_password("s3cret", encoded)


def test_file_name_template_may_use_names_and_dates(tmp_path: Path) -> None:
    path = _copy_demo(tmp_path)
    template = "{group_name}_{script_name}_{date}_{time}_{run_id}_{script_id}_v{variant}.csv"
    _edit(
        path,
        'file_name_template = "{run_id}_{group_id}_{script_id}_v{variant}.csv"',
        f'file_name_template = "{template}"',
    )
    assert load_config(path).output.file_name_template == template
    _edit(path, template, "{group_name}_{nope}.csv")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.entry == "output.file_name_template"
    assert "nope" in info.value.problem


@pytest.mark.parametrize(("value", "ok"), [("0", True), ("30", True), ("-1", False)])
def test_retention_days(tmp_path: Path, value: str, ok: bool) -> None:
    path = _copy_demo(tmp_path)
    _edit(path, "retention_days = 0 ", f"retention_days = {value} ")
    if ok:
        assert load_config(path).server.retention_days == int(value)
        return
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.entry == "server.retention_days"


def _with_hub(tmp_path: Path, body: str) -> Path:
    path = _copy_demo(tmp_path)
    with path.open("a", encoding="utf-8") as file:
        file.write(f"\n[server.hub]\n{body}\n")
    return path


def test_hub_defaults_and_aliases(tmp_path: Path) -> None:
    hub = load_config(DEMO).server.hub
    assert (hub.subscribe_methods, hub.unsubscribe_methods, hub.user_feed) == (
        ["SubscribeRun"],
        ["UnsubscribeRun"],
        True,
    )
    path = _with_hub(
        tmp_path,
        'subscribe_methods = ["JoinRun", "join_run_group"]\n'
        'unsubscribe_methods = ["LeaveRun"]\nuser_feed = false',
    )
    hub = load_config(path).server.hub
    assert hub.subscribe_methods == ["JoinRun", "join_run_group"]
    assert hub.unsubscribe_methods == ["LeaveRun"]
    assert hub.user_feed is False


@pytest.mark.parametrize(
    ("body", "entry", "problem"),
    [
        ('subscribe_methods = ["Join Run"]', "subscribe_methods", "is not a method name"),
        ('subscribe_methods = ["1Join"]', "subscribe_methods", "is not a method name"),
        ('subscribe_methods = [""]', "subscribe_methods", "is not a method name"),
        ('subscribe_methods = ["JoinRun", "join_run"]', "subscribe_methods", "listed twice"),
        ('subscribe_methods = ["unsubscriberun"]', "subscribe_methods", "clashes"),
        ('unsubscribe_methods = ["Subscribe_Run"]', "unsubscribe_methods", "clashes"),
        (
            'subscribe_methods = ["Join"]\nunsubscribe_methods = ["JOIN"]',
            "unsubscribe_methods",
            "clashes with a name of server.hub.subscribe_methods",
        ),
        ("user_feed = 1", "server.hub.user_feed", "Expected `bool`"),
    ],
)
def test_hub_method_names_that_clash_are_refused(
    tmp_path: Path, body: str, entry: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _with_hub(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.entry.endswith(entry)
    assert problem in info.value.problem
    assert main(["check-config", str(path)]) == 1
    assert problem in capsys.readouterr().err


def test_metrics_and_audit_sections_are_validated(tmp_path: Path) -> None:
    base = default_config_path().read_text(encoding="utf-8")
    for section, entry in (
        ('[metrics]\nenabled = true\nallow_from = ["10.0.0.300/8"]\n', "metrics.allow_from[0]"),
        ('[metrics]\npath = "/api/metrics"\n', "metrics.path"),
        ("[audit]\nretention_days = -1\n", "audit.retention_days"),
    ):
        config = tmp_path / "demo" / "exporter.toml"
        if not config.exists():
            shutil.copytree(default_config_path().parent, tmp_path / "demo")
        config.write_text(base + "\n" + section, encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_config(config)
        assert caught.value.entry == entry
    config.write_text(base + '\n[metrics]\nenabled = true\n[audit]\nsink = "stdout"\n', "utf-8")
    loaded = load_config(config)
    assert loaded.metrics.enabled
    assert loaded.metrics.allow_from == ["127.0.0.1/32", "::1/128"]
    assert loaded.audit.sink == "stdout"
    assert loaded.audit.retention_days == 400
