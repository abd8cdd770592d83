"""Configuration: one TOML file plus SQL files beside it, decoded into typed msgspec Structs.

`load_config(path)` decodes and validates everything at start; every problem raises `ConfigError`
naming the file, the entry (`groups[g-sales].scripts[s-orders]`) and what is wrong. The file holds
no secret: database passwords are the users' own, the JWT and vault keys come from the environment
or from key files in the data directory (`exporter_api.security.keys`).
"""

from __future__ import annotations

import ipaddress
import re
import string
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn
from urllib.parse import urlsplit

import msgspec

from exporter_api.errors import ConfigError
from exporter_api.sqlparams import SqlSyntaxError, param_names

SCRIPT_PARAMETERS = frozenset({"manager_id", "stream_id", "login", "database_id"})
FILE_NAME_FIELDS = frozenset(
    {
        "run_id",
        "group_id",
        "script_id",
        "variant",
        "login",
        "database_id",
        "manager_id",
        "stream_id",
        "group_name",
        "script_name",
        "date",
        "time",
    }
)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")

Encoding = Literal["utf-8", "utf-8-sig", "cp1251"]
FileFormat = Literal["csv", "csv.gz", "xlsx"]
Provider = Literal["postgres", "oracle", "sqlite"]


class _Base(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class HubConfig(_Base):
    """`[server.hub]`: how clients written against the contract may subscribe on the hub."""

    # Hub method names that subscribe a connection to a run (each takes the run id, as a string
    # or as `{ runId }`, and returns the run's state) and that unsubscribe it. `SubscribeRun` and
    # `UnsubscribeRun` always answer (the console uses them); these add the names an existing
    # frontend calls (`JoinRun`, `Subscribe`, ...).
    subscribe_methods: list[str] = msgspec.field(default_factory=lambda: ["SubscribeRun"])
    unsubscribe_methods: list[str] = msgspec.field(default_factory=lambda: ["UnsubscribeRun"])
    # Every authenticated connection also receives `run.updated` for each of its user's runs.
    user_feed: bool = True


BUILTIN_SUBSCRIBE = "SubscribeRun"
BUILTIN_UNSUBSCRIBE = "UnsubscribeRun"
_HUB_METHOD = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


class ServerConfig(_Base):
    hub_path: str = "/hubs/runs"
    hub: HubConfig = msgspec.field(default_factory=HubConfig)
    access_token_ttl_s: int = 300
    refresh_ttl_s: int = 8 * 3600
    # A refresh token presented again this soon after it was used gets a new pair instead of
    # ending the session as a theft: a page reloaded while its refresh was in flight never
    # received the rotated cookie. 0 turns the grace off.
    refresh_reuse_grace_s: float = 10.0
    max_active_runs_per_user: int = 3
    cors_origins: list[str] = []
    max_body_bytes: int = 64 * 1024
    # PostgreSQL state store URL without a password (PGPASSWORD / .pgpass or --state-url give it);
    # empty means SQLite under the data directory.
    state_url: str = ""
    login_max_failures: int = 5
    login_window_s: int = 300
    login_lockout_s: int = 60
    # Finished runs older than this many days are deleted with their files (0 keeps them forever).
    retention_days: int = 0
    # Lifetime of a signed download link (`downloadUrl`, `zipUrl`).
    download_link_ttl_s: int = 300
    # --- scale-out (several instances on one PostgreSQL state store) ---
    # Redis for the hub backplane (`redis://host:port/db`, no password here: --redis-url or
    # EXPORTER_REDIS_URL may carry one); empty = hub events stay in this process.
    redis_url: str = ""
    # Where the JWT and vault key files live when EXPORTER_JWT_KEY / EXPORTER_VAULT_KEY are not
    # set (a path shared by all instances, or a secret mount); empty = the data directory. With a
    # shared state store an instance never generates keys: they must exist in one of the two.
    keys_dir: str = ""
    # Peers (CIDRs) whose X-Forwarded-For / X-Forwarded-Proto are believed.
    trusted_proxies: list[str] = []
    # How often an instance records that it is alive and drives its runs, and after how long
    # without that another instance takes its runs over.
    heartbeat_s: float = 2.0
    takeover_after_s: float = 10.0
    # A run taken over more often than this ends Failed (an export that kills its instance).
    max_run_attempts: int = 3
    # SIGTERM: how long active runs may go on before they are handed over to other instances.
    drain_grace_s: float = 30.0
    # Downloads (single files and zips) one user may have open at once; more answer 429.
    max_downloads_per_user: int = 4


class OutputProfile(_Base):
    """`[[output.profiles]]`: a CSV style a database or a script may use instead of `[output]`'s
    own (Excel with Russian regional settings: `;`, a decimal comma, `dd.mm.yyyy`, a BOM)."""

    id: str
    delimiter: str = ","
    encoding: Encoding = "utf-8"
    header: bool = True
    decimal_separator: Literal[".", ","] = "."
    date_format: Literal["iso", "dd.mm.yyyy"] = "iso"


class OutputConfig(_Base):
    delimiter: str = ","
    encoding: Encoding = "utf-8"
    header: bool = True
    # The format of a script's files when the run does not choose one (`format` of a script
    # selection): csv | csv.gz | xlsx.
    format: FileFormat = "csv"
    # Split one variant's result into `..._part001.csv`, `..._part002.csv`, ... (0 = no limit);
    # every part has the header.
    max_rows_per_file: int = 0
    max_bytes_per_file: int = 0
    # csv.gz: 1 (fastest; the default: 5x less CPU than 6 for ~15% more bytes) .. 9 (smallest)
    gzip_level: int = 1
    profiles: list[OutputProfile] = []
    file_name_template: str = "{run_id}_{group_id}_{script_id}_v{variant}.csv"
    # Where exported files live: `<files_dir>/<runId>/`; may be a shared volume (NFS, SMB, a
    # ReadWriteMany volume) that every instance mounts. Empty = `<data dir>/exports`.
    files_dir: str = ""
    # Permissions of the files and directories the service creates (TOML octal: 0o640).
    file_mode: int = 0o600
    dir_mode: int = 0o700


class SqliteUser(_Base):
    """A demo account of a `sqlite` database (SQLite has none): login and password hash."""

    login: str
    password_hash: str


class DatabaseConfig(_Base):
    id: str
    display_name: str
    provider: Provider
    # postgres: postgresql://host:port/dbname?options (no user, no password)
    # oracle: host:port/service_name (easy connect, no credentials)
    # sqlite: path of the database file, relative to the data directory
    dsn: str
    max_connections: int = 4
    statement_timeout_s: float = 3600
    fetch_batch_rows: int = 5000
    connect_timeout_s: float = 10
    # sqlite only: the demo accounts and an SQL file (beside the config) that creates the
    # database at first start when the file does not exist yet.
    users: list[SqliteUser] = []
    init_sql: str | None = None
    # `[[output.profiles]]` id for this database's CSV files (a script's own wins); "" = `[output]`.
    output_profile: str = ""


class StreamConfig(_Base):
    id: str
    display_name: str


class ManagerConfig(_Base):
    id: str
    display_name: str
    streams: list[StreamConfig]


class ColumnItem(_Base):
    id: str
    label: str
    source: str  # column name in the script's result


class ColumnsProfile(_Base):
    id: str
    items: list[ColumnItem]


class ScriptVariant(_Base):
    index: int  # 1-based
    file: str  # relative to the config file
    sql: str = ""  # loaded from `file`


class ScriptConfig(_Base):
    id: str
    display_name: str
    execution_lane: int
    columns_profile_id: str
    variants: list[ScriptVariant]
    output_profile: str = ""  # `[[output.profiles]]` id; "" = the database's, else `[output]`


class GroupConfig(_Base):
    id: str
    display_name: str
    scripts: list[ScriptConfig]


class MetricsConfig(_Base):
    """`[metrics]`: `GET /metrics` (Prometheus), see `exporter_api.metrics`."""

    enabled: bool = False
    path: str = "/metrics"
    # Addresses (CIDRs) that may scrape; with EXPORTER_METRICS_TOKEN set, a scrape needs the
    # token too. Empty = any address (then the token is required).
    allow_from: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])


class AuditConfig(_Base):
    """`[audit]`: the audit trail, see `exporter_api.audit`."""

    # Records older than this many days are purged (0 keeps them for ever); independent of
    # server.retention_days (deleting a run never deletes its records).
    retention_days: int = 400
    # A copy of every record as JSON lines for a SIEM: "" (none), "stdout", or a file path
    # (relative to the data directory), appended to.
    sink: str = ""


class ExportConfig(_Base):
    databases: list[DatabaseConfig]
    managers: list[ManagerConfig]
    columns_profiles: list[ColumnsProfile] = []
    groups: list[GroupConfig] = []
    output: OutputConfig = msgspec.field(default_factory=OutputConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    audit: AuditConfig = msgspec.field(default_factory=AuditConfig)
    source_path: str = ""  # the file it was loaded from (set by load_config)

    # Lookups (ids are unique, checked by load_config).
    def database(self, database_id: str) -> DatabaseConfig | None:
        return next((d for d in self.databases if d.id == database_id), None)

    def manager(self, manager_id: str) -> ManagerConfig | None:
        return next((m for m in self.managers if m.id == manager_id), None)

    def group(self, group_id: str) -> GroupConfig | None:
        return next((g for g in self.groups if g.id == group_id), None)

    def profile(self, profile_id: str) -> ColumnsProfile | None:
        return next((p for p in self.columns_profiles if p.id == profile_id), None)


@dataclass
class Settings:
    """Process settings (CLI flags, environment); the catalog lives in `ExportConfig`."""

    config_path: Path
    data_dir: Path = Path("var")
    host: str = "127.0.0.1"
    port: int = 8000
    # Secure cookies unless the service runs on loopback over plain HTTP or this is set.
    insecure_cookies: bool | None = None
    state_url: str | None = None  # overrides config.server.state_url (may hold a password)
    log_level: str = "info"
    # Keys: from these env values when set, else generated key files in data_dir.
    jwt_key: bytes | None = None
    vault_key: bytes | None = None
    redis_url: str | None = None  # overrides config.server.redis_url (may hold a password)
    workers: int = 1  # processes serving one port (needs the PostgreSQL store and Redis)
    metrics_token: str | None = None  # overrides EXPORTER_METRICS_TOKEN

    @property
    def cookie_secure(self) -> bool:
        if self.insecure_cookies is not None:
            return not self.insecure_cookies
        return self.host not in {"127.0.0.1", "localhost", "::1"}


def default_config_path() -> Path:
    """examples/demo/exporter.toml of the repository this package lives in."""
    return Path(__file__).resolve().parent.parent / "examples" / "demo" / "exporter.toml"


def load_config(path: Path) -> ExportConfig:
    """Decode and validate the TOML file at `path` and the SQL files it names."""
    file = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read the file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(file, "", "the file is not valid UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"invalid TOML: {exc}") from None
    _expand_variant_lists(raw)
    try:
        config = msgspec.convert(raw, ExportConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(file, *_split_validation(str(exc), raw)) from None
    config.source_path = file
    _validate(config, path)
    return config


def _expand_variant_lists(raw: object) -> None:
    """`variants = ["a.sql", "b.sql"]` -> `[{index = 1, file = "a.sql"}, ...]`."""
    if not isinstance(raw, dict):
        return
    for group in raw.get("groups", []) if isinstance(raw.get("groups"), list) else []:
        scripts = group.get("scripts") if isinstance(group, dict) else None
        for script in scripts if isinstance(scripts, list) else []:
            variants = script.get("variants") if isinstance(script, dict) else None
            if isinstance(variants, list):
                script["variants"] = [
                    {"index": i, "file": v} if isinstance(v, str) else v
                    for i, v in enumerate(variants, start=1)
                ]


_LOCATION = re.compile(r" - at `\$(?P<loc>[^`]*)`$")


def _split_validation(message: str, raw: object) -> tuple[str, str]:
    """msgspec's `Expected int, got str - at $.groups[0].id` -> (entry, problem) with ids."""
    m = _LOCATION.search(message)
    if not m:
        return "", message
    problem = message[: m.start()]
    entry_parts: list[str] = []
    node: object = raw
    for piece in re.findall(r"\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\]", m.group("loc")):
        if piece.startswith("."):
            key = piece[1:]
            entry_parts.append(("." if entry_parts else "") + key)
            node = node.get(key) if isinstance(node, dict) else None
        else:
            index = int(piece[1:-1])
            node = node[index] if isinstance(node, list) and index < len(node) else None
            ident = node.get("id") if isinstance(node, dict) else None
            entry_parts.append(f"[{ident}]" if isinstance(ident, str) else piece)
    return "".join(entry_parts), problem


def _validate(config: ExportConfig, path: Path) -> None:
    file = str(path)
    base = path.parent

    def fail(entry: str, problem: str) -> NoReturn:
        raise ConfigError(file, entry, problem)

    def check_ids(kind: str, ids: list[str]) -> None:
        seen: set[str] = set()
        for ident in ids:
            if not _ID.match(ident):
                fail(f"{kind}[{ident}]", "id must be 1-64 letters, digits, '_', '-' or '.'")
            if ident in seen:
                fail(f"{kind}[{ident}]", "duplicate id")
            seen.add(ident)

    if not config.databases:
        fail("databases", "at least one database is required")
    if not config.managers:
        fail("managers", "at least one manager is required")
    check_ids("databases", [d.id for d in config.databases])
    check_ids("managers", [m.id for m in config.managers])
    check_ids("columns_profiles", [p.id for p in config.columns_profiles])
    check_ids("groups", [g.id for g in config.groups])
    # Script ids are unique across groups: `script.progress` events carry only the script id.
    check_ids("scripts", [s.id for g in config.groups for s in g.scripts])

    for db in config.databases:
        entry = f"databases[{db.id}]"
        _validate_dsn(db, fail, entry)
        if db.max_connections < 1:
            fail(entry, "max_connections must be at least 1")
        if db.statement_timeout_s <= 0:
            fail(entry, "statement_timeout_s must be positive")
        if not 1 <= db.fetch_batch_rows <= 1_000_000:
            fail(entry, "fetch_batch_rows must be between 1 and 1000000")
        if db.provider != "sqlite" and (db.users or db.init_sql):
            fail(entry, "users and init_sql are only for provider 'sqlite'")
        if db.provider == "sqlite":
            logins = [u.login for u in db.users]
            if len(set(logins)) != len(logins):
                fail(f"{entry}.users", "duplicate login")
            for user in db.users:
                if not user.password_hash.startswith(("scrypt$", "pbkdf2_sha256$")):
                    fail(
                        f"{entry}.users[{user.login}]",
                        "password_hash must be made by `exporter-api hash-password`",
                    )
            if db.init_sql is not None and not (base / db.init_sql).is_file():
                fail(f"{entry}.init_sql", f"file {base / db.init_sql} does not exist")

    for manager in config.managers:
        entry = f"managers[{manager.id}]"
        if not manager.streams:
            fail(entry, "a manager needs at least one stream")
        check_ids(f"{entry}.streams", [s.id for s in manager.streams])

    for profile in config.columns_profiles:
        entry = f"columns_profiles[{profile.id}]"
        if not profile.items:
            fail(entry, "a column profile needs at least one item")
        check_ids(f"{entry}.items", [i.id for i in profile.items])
        for item in profile.items:
            if not item.label.strip() or not item.source.strip():
                fail(f"{entry}.items[{item.id}]", "label and source must not be empty")
            if "\x00" in item.label or "\x00" in item.source:
                fail(f"{entry}.items[{item.id}]", "label and source must not contain NUL")
        labels = [i.label for i in profile.items]
        if len(set(labels)) != len(labels):
            fail(entry, "labels must be unique (they become CSV column names)")

    profiles = {p.id for p in config.columns_profiles}
    for group in config.groups:
        if not group.scripts:
            fail(f"groups[{group.id}]", "a group needs at least one script")
        for script in group.scripts:
            entry = f"groups[{group.id}].scripts[{script.id}]"
            if script.columns_profile_id not in profiles:
                fail(entry, f"columns_profile_id {script.columns_profile_id!r} is not defined")
            if script.execution_lane < 0:
                fail(entry, "execution_lane must not be negative")
            if not script.variants:
                fail(entry, "a script needs at least one variant")
            for variant in script.variants:
                variant.sql = _load_sql(base, variant, f"{entry}.variants[{variant.index}]", fail)

    out = config.output
    if len(out.delimiter) != 1 or out.delimiter in '"\r\n':
        fail("output.delimiter", "must be one character other than a quote or a line break")
    for name in ("max_rows_per_file", "max_bytes_per_file"):
        if getattr(out, name) < 0:
            fail(f"output.{name}", "must be 0 (no limit) or a positive number")
    if not 1 <= out.gzip_level <= 9:
        fail("output.gzip_level", "must be from 1 to 9")
    output_profiles: set[str] = set()
    for oprofile in out.profiles:
        entry = f"output.profiles[{oprofile.id}]"
        if oprofile.id in output_profiles:
            fail(entry, "duplicate id")
        output_profiles.add(oprofile.id)
        if len(oprofile.delimiter) != 1 or oprofile.delimiter in '"\r\n':
            fail(f"{entry}.delimiter", "must be one character other than a quote or a line break")
        if oprofile.delimiter == oprofile.decimal_separator:
            fail(f"{entry}.delimiter", "must differ from the decimal separator")
    for db in config.databases:
        if db.output_profile and db.output_profile not in output_profiles:
            fail(f"databases[{db.id}]", f"output_profile {db.output_profile!r} is not defined")
    for group in config.groups:
        for script in group.scripts:
            if script.output_profile and script.output_profile not in output_profiles:
                fail(
                    f"groups[{group.id}].scripts[{script.id}]",
                    f"output_profile {script.output_profile!r} is not defined",
                )
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(out.file_name_template) if f}
    except ValueError as exc:
        fail("output.file_name_template", f"invalid template: {exc}")
    unknown = fields - FILE_NAME_FIELDS
    if unknown:
        fail("output.file_name_template", f"unknown field(s): {', '.join(sorted(unknown))}")
    if "/" in out.file_name_template or "\\" in out.file_name_template:
        fail("output.file_name_template", "must be a file name, not a path")

    server = config.server
    if server.refresh_reuse_grace_s < 0:
        fail("server.refresh_reuse_grace_s", "must be 0 (off) or more")
    if not server.hub_path.startswith("/") or server.hub_path.startswith("/api/"):
        fail("server.hub_path", "must start with '/' and be outside /api/")
    for name in (
        "access_token_ttl_s",
        "refresh_ttl_s",
        "max_active_runs_per_user",
        "max_body_bytes",
        "login_max_failures",
        "login_window_s",
        "login_lockout_s",
        "download_link_ttl_s",
    ):
        if getattr(server, name) < 1:
            fail(f"server.{name}", "must be at least 1")
    _validate_hub(server.hub, fail)
    if server.retention_days < 0:
        fail("server.retention_days", "must be 0 (keep forever) or a number of days")
    if server.state_url:
        parts = urlsplit(server.state_url)
        if parts.scheme not in {"postgres", "postgresql"}:
            fail("server.state_url", "must be a postgresql:// URL (or empty for SQLite)")
        if parts.password is not None:
            fail("server.state_url", "must not contain a password (use PGPASSWORD or --state-url)")
    if server.redis_url:
        parts = urlsplit(server.redis_url)
        if parts.scheme not in {"redis", "rediss", "unix"}:
            fail("server.redis_url", "must be a redis://, rediss:// or unix:// URL (or empty)")
        if parts.password is not None:
            fail(
                "server.redis_url",
                "must not contain a password (use --redis-url or EXPORTER_REDIS_URL)",
            )
    for index, cidr in enumerate(server.trusted_proxies):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            fail(f"server.trusted_proxies[{index}]", f"{cidr!r} is not an address or CIDR")
    if server.heartbeat_s <= 0:
        fail("server.heartbeat_s", "must be positive")
    if server.takeover_after_s < 2 * server.heartbeat_s:
        fail("server.takeover_after_s", "must be at least twice server.heartbeat_s")
    for name in ("max_run_attempts", "max_downloads_per_user"):
        if getattr(server, name) < 1:
            fail(f"server.{name}", "must be at least 1")
    if server.drain_grace_s < 0:
        fail("server.drain_grace_s", "must not be negative")
    metrics = config.metrics
    if not metrics.path.startswith("/") or metrics.path.startswith(("/api/", server.hub_path)):
        fail("metrics.path", "must start with '/' and be outside /api/ and the hub path")
    for index, cidr in enumerate(metrics.allow_from):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            fail(f"metrics.allow_from[{index}]", f"{cidr!r} is not an address or CIDR")
    if config.audit.retention_days < 0:
        fail("audit.retention_days", "must be 0 (keep forever) or a number of days")
    if "\x00" in config.audit.sink:
        fail("audit.sink", "must be empty, 'stdout' or a file path")
    for name in ("file_mode", "dir_mode"):
        mode = getattr(out, name)
        if not 0 <= mode <= 0o777 or mode & 0o600 != 0o600:
            fail(f"output.{name}", "must be a mode such as 0o600 (owner read+write)")
    if out.dir_mode & 0o100 == 0:
        fail("output.dir_mode", "must let the owner enter the directory (0o700 or wider)")


def _hub_key(name: str) -> str:
    # signalr_core matches wire names case-insensitively with underscores ignored.
    return name.replace("_", "").lower()


def _validate_hub(hub: HubConfig, fail: Callable[[str, str], NoReturn]) -> None:
    """Method names are identifiers, and no two of them (nor a name and the other built-in
    method) reach the same hub method."""
    taken: dict[str, str] = {}  # hub key -> the list entry that claimed it
    lists = (
        ("subscribe_methods", hub.subscribe_methods, BUILTIN_SUBSCRIBE),
        ("unsubscribe_methods", hub.unsubscribe_methods, BUILTIN_UNSUBSCRIBE),
    )
    for list_name, _, builtin in lists:
        taken[_hub_key(builtin)] = list_name
    for list_name, names, _ in lists:
        entry = f"server.hub.{list_name}"
        seen: set[str] = set()
        for name in names:
            if not _HUB_METHOD.match(name):
                fail(entry, f"{name!r} is not a method name (a letter, then letters, digits, '_')")
            key = _hub_key(name)
            if key in seen:
                fail(entry, f"{name!r} is listed twice (names match ignoring case and '_')")
            seen.add(key)
            owner = taken.setdefault(key, list_name)
            if owner != list_name:
                fail(entry, f"{name!r} clashes with a name of server.hub.{owner}")


def _validate_dsn(db: DatabaseConfig, fail: Callable[[str, str], NoReturn], entry: str) -> None:
    if not db.dsn.strip():
        fail(f"{entry}.dsn", "must not be empty")
    if db.provider == "postgres":
        parts = urlsplit(db.dsn)
        if parts.scheme not in {"postgres", "postgresql"}:
            fail(f"{entry}.dsn", "must be a postgresql://host:port/dbname URL")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            fail(f"{entry}.dsn", "must not contain credentials (users log in with their own)")
        if re.search(r"(^|&)(user|password|passfile)=", parts.query):
            fail(f"{entry}.dsn", "must not contain credentials (users log in with their own)")
    elif db.provider == "oracle" and (
        "@" in db.dsn or "/" in db.dsn.split(":", 1)[0] or "password" in db.dsn.lower()
    ):
        fail(f"{entry}.dsn", "must be host:port/service_name without credentials")


def _load_sql(
    base: Path, variant: ScriptVariant, entry: str, fail: Callable[[str, str], NoReturn]
) -> str:
    if variant.index < 1:
        fail(entry, "variant index must be 1 or more")
    sql_path = (base / variant.file).resolve()
    try:
        sql = sql_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(entry, f"SQL file {sql_path} does not exist")
    except (OSError, UnicodeDecodeError) as exc:
        fail(entry, f"cannot read SQL file {sql_path}: {exc}")
    if not sql.strip():
        fail(entry, f"SQL file {sql_path} is empty")
    try:
        used = param_names(sql)
    except SqlSyntaxError as exc:
        fail(entry, f"{sql_path}: {exc}")
    unknown = used - SCRIPT_PARAMETERS
    if unknown:
        fail(
            entry,
            f"{sql_path}: unknown parameter(s) {', '.join(':' + u for u in sorted(unknown))}; "
            f"scripts may use {', '.join(':' + p for p in sorted(SCRIPT_PARAMETERS))}",
        )
    return sql


__all__ = [
    "BUILTIN_SUBSCRIBE",
    "BUILTIN_UNSUBSCRIBE",
    "SCRIPT_PARAMETERS",
    "AuditConfig",
    "ColumnItem",
    "ColumnsProfile",
    "DatabaseConfig",
    "ExportConfig",
    "GroupConfig",
    "HubConfig",
    "ManagerConfig",
    "MetricsConfig",
    "OutputConfig",
    "ScriptConfig",
    "ScriptVariant",
    "ServerConfig",
    "Settings",
    "SqliteUser",
    "StreamConfig",
    "default_config_path",
    "load_config",
]
