from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter_api.sqlparams import (
    SqlSyntaxError,
    param_names,
    split_statements,
    strip_terminator,
    to_numbered,
    to_oracle,
    to_qmark,
)

PARAMS = {"manager_id": "m1", "stream_id": "s1", "login": "USER1", "database_id": "db"}


def test_numbered_reuses_numbers_per_name() -> None:
    sql, args = to_numbered(
        "SELECT * FROM t WHERE a = :manager_id AND b = :stream_id OR c = :manager_id", PARAMS
    )
    assert sql == "SELECT * FROM t WHERE a = $1 AND b = $2 OR c = $1"
    assert args == ["m1", "s1"]


def test_placeholders_in_literals_identifiers_and_comments_are_ignored() -> None:
    sql = (
        "SELECT ':login', \"col:login\", E'it\\'s :login', $$ :login $$, $q$ :x $q$ -- :login\n"
        "/* :login /* nested :login */ still :login */ , x::int, :login FROM t"
    )
    out, args = to_numbered(sql, PARAMS)
    assert args == ["USER1"]
    assert out.endswith("x::int, $1 FROM t")
    assert out.count("$1") == 1 + sql.count("$1")


def test_oracle_q_quote_and_only_used_binds() -> None:
    sql, binds = to_oracle("SELECT q'[ :login ]', :stream_id FROM dual", PARAMS)
    assert sql == "SELECT q'[ :login ]', :stream_id FROM dual"
    assert binds == {"stream_id": "s1"}


def test_qmark_one_argument_per_occurrence() -> None:
    sql, args = to_qmark("SELECT :login, :login, ':login'", PARAMS)
    assert sql == "SELECT ?, ?, ':login'"
    assert args == ["USER1", "USER1"]


def test_cast_and_assignment_are_not_placeholders() -> None:
    assert param_names("SELECT a::text, b := 1, :stream_id::int") == {"stream_id"}


def test_missing_value_is_reported() -> None:
    with pytest.raises(KeyError, match="manager_id"):
        to_numbered("SELECT :manager_id", {})


@pytest.mark.parametrize("sql", ["SELECT 'open", 'SELECT "open', "SELECT /* open", "SELECT $$ x"])
def test_unterminated_tokens_raise(sql: str) -> None:
    with pytest.raises(SqlSyntaxError):
        param_names(sql)


def test_strip_terminator_and_split() -> None:
    assert strip_terminator("SELECT ';' ; -- done\n") == "SELECT ';' "
    assert strip_terminator("SELECT 1 -- no terminator") == "SELECT 1 -- no terminator"
    assert split_statements(
        "CREATE TABLE a (x TEXT DEFAULT ';'); -- ;\n\nINSERT INTO a VALUES ('b');"
    ) == [
        "CREATE TABLE a (x TEXT DEFAULT ';')",
        "INSERT INTO a VALUES ('b')",
    ]


@given(st.text(alphabet="ab:_'\"-/*$ \n;xq", max_size=60))
def test_tokenizer_parses_or_raises_its_own_error(sql: str) -> None:
    try:
        names = param_names(sql)
    except SqlSyntaxError:
        return
    _rendered, args = to_numbered(sql, dict.fromkeys(names, "v"))
    assert len(args) == len(names)
